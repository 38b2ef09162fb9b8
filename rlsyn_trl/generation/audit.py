"""Memorisation audit: which synthetic images are near-copies of a real (private) training image?

For every synthetic image the audit finds its nearest real TRAINING image in two spaces. Any identity counts,
not only the sample's own: a sample of one person that reproduces another person's photo leaks that photo too.

- Pixel space: the RMS difference of the images in ``[-1, 1]`` at the generator's resolution. It catches exact and
  near-exact copies whatever the encoder makes of them.
- Feature space: the Euclidean distance between the L2-normalised identity features. It catches copies that moved
  in pixel space but not in identity (mirrored, shifted, re-lit: the very changes the encoder was trained to ignore).

Threshold, per space: the ``percentile``-th (default 5th) percentile of the distances between DIFFERENT real images
of the SAME identity. A sample closer to a real photo than 95% of a person's genuine photo pairs are to each other is
suspiciously close. The pairs come from the private training images when they hold any (2+ shots per identity); with
1 shot there are none, so the distribution comes from the PUBLIC identities in the same two spaces, and the dataset
card says so.

Combination (``criterion``): ``"either"`` (the default) flags a sample under ANY of the two thresholds, because each
space misses copies the other catches and a privacy audit should err towards flagging. ``"both"`` (under both
thresholds), ``"pixel"`` and ``"feature"`` are available for readers who want a narrower test.

Floor: fresh real photos of a person are not copies, yet fall under such a threshold some of the time (5-12% on ORL),
since the nearest of several training images is taken and two spaces are tested. The same rule applied
to held-out real images gives that floor; a synthetic rate is read against it, not against zero.

Computation: fp32 matrix products on the device of the features (the BLAS / tensor-core path), ``chunk_size``
samples at a time against all training images, so the memory is one ``[chunk, train]`` block whatever the number of
samples; thresholds use each identity's own pairs, never a matrix over the whole training set. Cancellation in the
product form is clamped and near-zero pairs and each nearest neighbour are recomputed directly, so an exact copy
measures exactly 0. The nearest image's row and the space that flagged a sample are kept for the reader.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

AUDIT_CRITERIA = ("either", "both", "pixel", "feature")
THRESHOLD_SOURCES = ("auto", "private", "public")


DEFAULT_CHUNK_SIZE = 256
# Squared distances the matrix-product form puts below this fraction of the two squared norms are recomputed
# directly: in fp32, ``|q|^2 + |r|^2 - 2 q.r`` leaves a residue of ~1e-7 of the norms on identical rows (and can go
# negative), while the direct difference of an exact copy is exactly 0.
_RECOMPUTE_BELOW = 1e-4
_RECOMPUTE_PAIRS = 4096  # direct recomputation in pieces, so many near-identical pairs cannot blow the memory


@contextlib.contextmanager
def full_fp32_matmul():
    """Matrix products in full fp32 for the duration: TF32 (which the runtime allows on GPUs for training) keeps
    10 mantissa bits, too few for distances compared against a threshold near the same-identity floor."""
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed


def _squared_norms(rows: torch.Tensor) -> torch.Tensor:
    """Row norms squared without a temporary the size of ``rows`` (``rows.pow(2)`` would double the memory)."""
    return torch.linalg.vector_norm(rows, dim=1).square()


def _euclidean(
    queries: torch.Tensor,
    references: torch.Tensor,
    query_norms: torch.Tensor | None = None,
    reference_norms: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise Euclidean distances ``[Q, R]`` of fp32 rows by one matrix product (the BLAS / tensor-core path).

    Negative squared values from cancellation are clamped to 0, and near-zero ones are recomputed as the direct
    difference of the two rows, so an exact copy measures exactly 0 whatever the chunking or the device.
    """
    query_norms = _squared_norms(queries) if query_norms is None else query_norms
    reference_norms = _squared_norms(references) if reference_norms is None else reference_norms
    scale = query_norms[:, None] + reference_norms[None, :]
    with full_fp32_matmul():
        squared = torch.addmm(scale, queries, references.T, alpha=-2.0).clamp_(min=0.0)
    rows, columns = torch.nonzero(squared <= _RECOMPUTE_BELOW * scale, as_tuple=True)
    for start in range(0, len(rows), _RECOMPUTE_PAIRS):
        i, j = rows[start : start + _RECOMPUTE_PAIRS], columns[start : start + _RECOMPUTE_PAIRS]
        squared[i, j] = (queries[i] - references[j]).pow(2).sum(dim=1)
    return squared.sqrt_()


def _as_rows(values: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """``[N, ...]`` values as fp32 rows ``[N, D]`` on ``device`` (a no-op for fp32 rows already there)."""
    return values.flatten(1).to(device=device, dtype=torch.float32)


def pixel_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance ``[Q, R]`` between images ``[Q, C, H, W]`` and ``[R, C, H, W]`` (same size, in [-1, 1])."""
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(
            f"Pixel distances need images of one size; got {tuple(queries.shape[1:])} and {tuple(references.shape[1:])}"
        )
    size = queries[0].numel()
    return _euclidean(_as_rows(queries), _as_rows(references, queries.device)) / math.sqrt(size)


def feature_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``[Q, R]`` between identity features (``sqrt(2 - 2 cos)`` for unit vectors)."""
    return _euclidean(_as_rows(queries), _as_rows(references, queries.device))


def same_identity_distances(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The distances of every unordered pair of DIFFERENT images sharing an identity, from a square matrix."""
    labels = torch.as_tensor(labels)
    same = labels[:, None] == labels[None, :]
    return distances[torch.triu(same, diagonal=1)]


def grouped_same_identity_distances(
    values: torch.Tensor, labels: torch.Tensor, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """:func:`same_identity_distances` one identity at a time: the memory is that of the largest identity's square
    matrix, never of the whole set's (10k real images would make a 10k x 10k matrix)."""
    labels = torch.as_tensor(labels)
    parts = []
    for identity in labels.unique():
        members = values[labels.to(values.device) == identity.to(values.device)]
        if len(members) > 1:
            square = distance(members, members)
            parts.append(square[torch.triu(torch.ones_like(square, dtype=torch.bool), diagonal=1)].cpu())
    return torch.cat(parts) if parts else torch.zeros(0)


@dataclass(frozen=True)
class AuditThresholds:
    """Per-space thresholds and how they were obtained (everything the dataset card must state)."""

    pixel: float
    feature: float
    percentile: float
    criterion: str
    source: str  # "private": the training images' own pairs; "public": the public identities' pairs
    num_pairs: int

    def __post_init__(self) -> None:
        if self.criterion not in AUDIT_CRITERIA:
            raise ValueError(f"criterion must be one of {AUDIT_CRITERIA}, got {self.criterion!r}")

    def combine(self, under_pixel: torch.Tensor, under_feature: torch.Tensor) -> torch.Tensor:
        """``memorized`` per sample from the per-space verdicts, by the criterion."""
        return {
            "either": under_pixel | under_feature,
            "both": under_pixel & under_feature,
            "pixel": under_pixel,
            "feature": under_feature,
        }[self.criterion]

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_thresholds(
    train_images: torch.Tensor,
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    public_images: torch.Tensor | None = None,
    public_features: torch.Tensor | None = None,
    public_labels: torch.Tensor | None = None,
    percentile: float = 5.0,
    criterion: str = "either",
    source: str = "auto",
) -> AuditThresholds:
    """Thresholds from same-identity pairs of real images: the private training ones, or the public ones.

    ``source="auto"`` uses the training images when any identity has two of them and falls back to the public
    identities otherwise (1 shot); ``"private"`` / ``"public"`` force one. Images are in ``[-1, 1]`` at the audit
    resolution; features come from the encoder the samples are audited with.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must lie in (0, 100), got {percentile}")
    if source not in THRESHOLD_SOURCES:
        raise ValueError(f"source must be one of {THRESHOLD_SOURCES}, got {source!r}")
    train_labels = torch.as_tensor(train_labels)
    counts = torch.unique(train_labels, return_counts=True)[1]
    use_private = source == "private" or (source == "auto" and bool((counts >= 2).any()))
    if use_private:
        images, features, labels, name = train_images, train_features, train_labels, "private"
    else:
        if public_images is None or public_features is None or public_labels is None:
            raise ValueError(
                "The training images hold no two images of one identity (1 shot), so the memorisation threshold "
                "must come from the PUBLIC identities: pass public_images, public_features and public_labels (in "
                "the generation recipe: set public_dataset_config)."
            )
        images, features, labels, name = public_images, public_features, torch.as_tensor(public_labels), "public"
    pixel_pairs = grouped_same_identity_distances(images, labels, pixel_distances)
    feature_pairs = grouped_same_identity_distances(features, labels, feature_distances)
    if pixel_pairs.numel() == 0:
        raise ValueError(f"The {name} images hold no two images of one identity: no threshold can be calibrated.")
    quantile = percentile / 100
    return AuditThresholds(
        pixel=torch.quantile(pixel_pairs, quantile).item(),
        feature=torch.quantile(feature_pairs, quantile).item(),
        percentile=percentile,
        criterion=criterion,
        source=name,
        num_pairs=pixel_pairs.numel(),
    )


@dataclass
class AuditResult:
    """Per-image nearest real training image (index and distance) in both spaces, and the verdicts."""

    pixel_distance: torch.Tensor
    pixel_index: torch.Tensor
    feature_distance: torch.Tensor
    feature_index: torch.Tensor
    under_pixel: torch.Tensor  # strictly closer than the pixel threshold
    under_feature: torch.Tensor
    memorized: torch.Tensor  # the criterion's combination of the two
    criterion: str = "either"

    def memorized_by(self) -> list[str]:
        """Per image, the spaces that flagged it: ``"pixel"``, ``"feature"``, ``"pixel+feature"``, or ``""`` when it
        is not ``memorized``. Only the criterion's spaces count (under ``"pixel"``, the feature space flags nothing)."""
        spaces = {"pixel": ("pixel",), "feature": ("feature",)}.get(self.criterion, ("pixel", "feature"))
        verdicts = zip(self.memorized.tolist(), self.under_pixel.tolist(), self.under_feature.tolist())
        return [
            "+".join(name for name, under in (("pixel", pixel), ("feature", feature)) if under and name in spaces)
            if flagged
            else ""
            for flagged, pixel, feature in verdicts
        ]


def nearest_neighbours(
    queries: torch.Tensor,
    references: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest reference row (Euclidean distance, index) of every query, ``chunk_size`` queries at a time.

    Rows are flattened and computed in fp32 by matrix products on ``device`` (default: the references' device);
    the working memory is one ``[chunk_size, len(references)]`` block, whatever the number of queries. Each
    winner's distance is then taken directly from the two rows (exactly 0 for a copy). The results are on the CPU,
    in the queries' order.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if len(references) == 0:
        raise ValueError("The audit needs at least one real training image to compare with.")
    device = references.device if device is None else torch.device(device)
    references = _as_rows(references, device)
    reference_norms = _squared_norms(references)
    distances, indices = [], []
    for chunk in queries.split(chunk_size):
        chunk = _as_rows(chunk, device)
        index = _euclidean(chunk, references, reference_norms=reference_norms).argmin(dim=1)
        # The winner's distance again, directly: the product form loses ~1e-3 of small distances to cancellation.
        distance = (chunk - references[index]).pow(2).sum(dim=1).sqrt()
        distances.append(distance.cpu())
        indices.append(index.cpu())
    if not distances:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(distances), torch.cat(indices)


def audit_images(
    images: torch.Tensor,
    features: torch.Tensor,
    train_images: torch.Tensor,
    train_features: torch.Tensor,
    thresholds: AuditThresholds,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device: torch.device | str | None = None,
) -> AuditResult:
    """Nearest real training image of each image in pixel and feature space, flagged by ``thresholds``.

    Runs on ``device`` (default: the features' device, e.g. where the encoder ran); queries go ``chunk_size`` at a
    time (:func:`nearest_neighbours`), so the memory never holds a full [images x train] matrix.
    """
    device = features.device if device is None else device
    pixel_distance, pixel_index = nearest_neighbours(images, train_images, chunk_size, device)
    pixel_distance = pixel_distance / math.sqrt(images[0].numel() if len(images) else 1)
    feature_distance, feature_index = nearest_neighbours(features, train_features, chunk_size, device)
    under_pixel = pixel_distance < thresholds.pixel
    under_feature = feature_distance < thresholds.feature
    return AuditResult(
        pixel_distance=pixel_distance,
        pixel_index=pixel_index,
        feature_distance=feature_distance,
        feature_index=feature_index,
        under_pixel=under_pixel,
        under_feature=under_feature,
        memorized=thresholds.combine(under_pixel, under_feature),
        criterion=thresholds.criterion,
    )


def memorization_rates(result: AuditResult, labels: torch.Tensor, label_names: Sequence[str]) -> dict:
    """Overall and per-identity rates (identities absent from ``labels`` are left out), for cards and logs."""
    labels = torch.as_tensor(labels)
    flagged = result.memorized.float()
    per_identity = {
        label_names[identity]: flagged[labels == identity].mean().item() for identity in labels.unique().tolist()
    }
    return {
        "rate": flagged.mean().item(),
        "count": int(result.memorized.sum()),
        "total": len(flagged),
        "pixel_rate": result.under_pixel.float().mean().item(),
        "feature_rate": result.under_feature.float().mean().item(),
        "per_identity": per_identity,
    }
