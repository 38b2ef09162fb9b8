"""The paper's test protocols for a trained recognizer, on its pooled embedding: person ReID retrieval (mAP and CMC
rank-k under the Market-1501 protocol, ``load_metric("reid")``) and face verification (10-fold pair accuracy on
LFW, AgeDB-30, CFP-FP, CALFW, CPLFW or RFW pairs, ``load_metric("verification")``).

Embeddings are the L2-normalised sum of the image's and its mirror's (the usual flip test), compared by cosine.
Images are decoded and embedded chunk by chunk, so a full Market-1501 gallery never sits in memory as pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from ..data.preprocessing import Resolution, preprocess_images
from ..metrics import load_metric

RFW_PREFIX = "rfw_"  # verification sets named rfw_<race> are RFW's races, summarised on their own

if TYPE_CHECKING:
    from .config import RecognizerConfig
    from .model import IdentityRecognizer


@torch.no_grad()
def embed_column(
    model: IdentityRecognizer,
    dataset: datasets.Dataset,
    column: str,
    resolution: Resolution,
    channels: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """Flip-test embeddings ``[N, D]`` (float32, CPU) of the images in ``dataset[column]``, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    features = []
    for start in range(0, len(dataset), batch_size):
        images = dataset[start : start + batch_size][column]
        pixels = preprocess_images(images, resolution, channels).to(device)
        features.append(F.normalize(model.embed(pixels) + model.embed(pixels.flip(-1)), dim=-1).float().cpu())
    model.train(was_training)
    return torch.cat(features)


def reid_evaluation(
    model: IdentityRecognizer,
    query: datasets.Dataset,
    gallery: datasets.Dataset,
    resolution: Resolution,
    channels: int,
    batch_size: int = 256,
) -> dict[str, float]:
    """mAP and CMC rank-1/5/10 of ``query`` against ``gallery`` (columns ``image``, ``person_id``, ``camera_id``);
    same-camera matches and junk are filtered as the Market-1501 protocol does."""
    query_features = embed_column(model, query, "image", resolution, channels, batch_size)
    gallery_features = embed_column(model, gallery, "image", resolution, channels, batch_size)
    distances = (1 - query_features @ gallery_features.T).numpy()
    return load_metric("reid").compute(
        distances=distances,
        query_ids=query["person_id"],
        query_cameras=query["camera_id"],
        gallery_ids=gallery["person_id"],
        gallery_cameras=gallery["camera_id"],
    )


def verification_evaluation(
    model: IdentityRecognizer,
    pairs: datasets.Dataset,
    resolution: Resolution,
    channels: int,
    batch_size: int = 256,
) -> dict[str, float]:
    """10-fold accuracy on a pair set (columns ``image_a``, ``image_b``, ``issame``, ``fold``), by the pairs'
    cosine similarity; the fold column keeps the benchmark's own cut."""
    first, second = (
        embed_column(model, pairs, column, resolution, channels, batch_size) for column in ("image_a", "image_b")
    )
    return load_metric("verification").compute(
        predictions=(first * second).sum(dim=1).numpy(), references=pairs["issame"], folds=pairs["fold"]
    )


def evaluate_recognizer(
    model: IdentityRecognizer,
    config: RecognizerConfig,
    real: datasets.DatasetDict,
    verification: Mapping[str, datasets.Dataset] | None = None,
) -> dict[str, float]:
    """The protocols the data supports, as ``test_``-prefixed metrics: ReID retrieval when ``real`` has ``query``
    and ``gallery`` splits, verification on every pair set of ``verification`` (plus their mean accuracy, the
    paper's headline face number; RFW's races, named ``rfw_<race>``, are averaged apart, with their spread).
    Identification on a ``test`` split is the Trainer's own evaluation."""
    settings = (config.resolution, config.channels, config.per_device_eval_batch_size)
    metrics = {}
    if "query" in real and "gallery" in real:
        metrics.update(reid_evaluation(model, real["query"], real["gallery"], *settings))
    for name, pairs in (verification or {}).items():
        result = verification_evaluation(model, pairs, *settings)
        metrics.update({f"{name}_{key}": value for key, value in result.items()})
    races = [name for name in verification or {} if name.startswith(RFW_PREFIX)]
    benchmarks = [name for name in verification or {} if name not in races]
    if benchmarks:
        metrics["verification_mean_accuracy"] = float(np.mean([metrics[f"{name}_accuracy"] for name in benchmarks]))
    if races:  # RFW's summary: the mean over races and their spread (the bias measure)
        accuracies = [metrics[f"{name}_accuracy"] for name in races]
        metrics.update(rfw_mean_accuracy=float(np.mean(accuracies)), rfw_std_accuracy=float(np.std(accuracies)))
    return {f"test_{key}": value for key, value in metrics.items()}
