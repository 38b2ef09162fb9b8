"""The numeric core of the paper's evaluation metrics, in plain ``numpy``.

The packaged ``evaluate`` modules (``reid``, ``verification``) only wrap these functions, so the package and the
modules share one implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike


def reid_metrics(
    distances: ArrayLike,
    query_ids: ArrayLike,
    gallery_ids: ArrayLike,
    query_cameras: ArrayLike,
    gallery_cameras: ArrayLike,
    ranks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """mAP and CMC rank-k of a ``[num_query, num_gallery]`` distance matrix, under the Market-1501 protocol.

    For each query, the gallery images of the same person taken by the same camera are removed (they are near
    duplicates of the query, not a re-identification), as are junk images (negative person id). Queries left with
    no true match are skipped. AP is the mean of the precision at each true match's rank (not interpolated, as in
    torchreid and fast-reid); rank-k is the fraction of queries with a true match among the k nearest. Ties in
    distance keep gallery order.
    """
    distances = np.asarray(distances, dtype=np.float64)
    query_ids, query_cameras = np.asarray(query_ids), np.asarray(query_cameras)
    gallery_ids, gallery_cameras = np.asarray(gallery_ids), np.asarray(gallery_cameras)
    expected = (len(query_ids), len(gallery_ids))
    if distances.shape != expected or len(query_cameras) != expected[0] or len(gallery_cameras) != expected[1]:
        raise ValueError(
            f"distances must be [num_query, num_gallery] = {list(expected)} with one camera per image; got distances "
            f"{list(distances.shape)}, {len(query_cameras)} query cameras, {len(gallery_cameras)} gallery cameras."
        )
    if not ranks or min(ranks) < 1:
        raise ValueError(f"ranks must be positive integers, got {ranks}")
    average_precisions, first_hits = [], []
    for row, person, camera in zip(distances, query_ids, query_cameras):
        order = np.argsort(row, kind="stable")
        ranked_ids, ranked_cameras = gallery_ids[order], gallery_cameras[order]
        kept = (ranked_ids >= 0) & ~((ranked_ids == person) & (ranked_cameras == camera))
        hits = np.flatnonzero(ranked_ids[kept] == person)  # 0-based ranks of the true matches
        if hits.size == 0:
            continue
        average_precisions.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))
        first_hits.append(hits[0])
    if not average_precisions:
        raise ValueError("No query has a true match in the gallery from another camera; check ids and cameras.")
    first_hits = np.asarray(first_hits)
    return {"mAP": float(np.mean(average_precisions))} | {f"rank{k}": float(np.mean(first_hits < k)) for k in ranks}


def fold_ids(num_items: int, num_folds: int = 10) -> np.ndarray:
    """Fold of each of ``num_items`` ordered items cut into ``num_folds`` contiguous folds.

    The same cut as ``KFold(n_splits=num_folds, shuffle=False)`` in insightface's verification code: equal folds,
    the first ``num_items % num_folds`` one item larger.
    """
    if num_folds < 2 or num_items < num_folds:
        raise ValueError(f"Need at least 2 folds and one item per fold, got {num_items} items for {num_folds} folds.")
    sizes = [num_items // num_folds + (fold < num_items % num_folds) for fold in range(num_folds)]
    return np.repeat(np.arange(num_folds), sizes)


def best_threshold(scores: ArrayLike, issame: ArrayLike) -> tuple[float, float]:
    """The similarity threshold (``same`` iff ``score >= threshold``) most accurate on these pairs, and its accuracy.

    The candidates cover every distinct decision on these pairs: the lowest score (all ``same``), the midpoints
    between consecutive distinct scores, and just above the highest (all ``different``). Ties go to the lowest.
    """
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    order = np.argsort(scores, kind="stable")
    scores, issame = scores[order], issame[order]
    distinct = np.unique(scores)
    candidates = np.concatenate(
        [distinct[:1], (distinct[:-1] + distinct[1:]) / 2, [np.nextafter(distinct[-1], np.inf)]]
    )
    below = np.searchsorted(scores, candidates, side="left")  # pairs predicted "different" at each candidate
    negatives_below = np.concatenate([[0], np.cumsum(~issame)])[below]
    positives_at_or_above = issame.sum() - np.concatenate([[0], np.cumsum(issame)])[below]
    correct = negatives_below + positives_at_or_above
    best = int(np.argmax(correct))
    return float(candidates[best]), float(correct[best] / scores.size)


def verification_accuracy(
    scores: ArrayLike, issame: ArrayLike, folds: ArrayLike | None = None, num_folds: int = 10
) -> dict[str, float]:
    """k-fold face verification accuracy, as reported on LFW, AgeDB-30, CFP-FP, CALFW, CPLFW and RFW.

    For each fold, the threshold is the best one (:func:`best_threshold`) on the other folds and the accuracy is
    measured on the held-out fold. ``scores`` are similarities (higher means same person; negate distances).
    ``folds`` gives each pair's fold; by default the pairs' order is cut by :func:`fold_ids`, as the benchmarks'
    pair files are laid out. Returns the mean and (population) standard deviation of the fold accuracies and the
    mean threshold.
    """
    scores, issame = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(issame, dtype=bool).ravel()
    if scores.size != issame.size:
        raise ValueError(f"Got {scores.size} scores for {issame.size} issame labels.")
    folds = fold_ids(scores.size, num_folds) if folds is None else np.asarray(folds).ravel()
    if folds.size != scores.size or np.unique(folds).size < 2:
        raise ValueError(f"folds must give one fold per pair ({scores.size}) and hold at least 2 distinct folds.")
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        threshold, _ = best_threshold(scores[~test], issame[~test])
        accuracies.append(np.mean((scores[test] >= threshold) == issame[test]))
        thresholds.append(threshold)
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "threshold": float(np.mean(thresholds)),
    }


def pair_similarity(embeddings_a: ArrayLike, embeddings_b: ArrayLike) -> np.ndarray:
    """Cosine similarity of each pair of embeddings (``[num_pairs, dim]`` each)."""
    embeddings_a, embeddings_b = np.asarray(embeddings_a, dtype=np.float64), np.asarray(embeddings_b, dtype=np.float64)
    if embeddings_a.shape != embeddings_b.shape or embeddings_a.ndim != 2:
        raise ValueError(f"Expected two [num_pairs, dim] arrays, got {embeddings_a.shape} and {embeddings_b.shape}.")
    norms = np.linalg.norm(embeddings_a, axis=1) * np.linalg.norm(embeddings_b, axis=1)
    if np.any(norms == 0):
        raise ValueError("An embedding is all zeros: its cosine similarity is undefined.")
    return np.sum(embeddings_a * embeddings_b, axis=1) / norms
