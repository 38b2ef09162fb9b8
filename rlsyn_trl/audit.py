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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

AUDIT_CRITERIA = ("either", "both", "pixel", "feature")
THRESHOLD_SOURCES = ("auto", "private", "public")


def _euclidean(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Exact pairwise distances: the matrix-product shortcut leaves ~1e-8 on identical rows, which varies with the
    batch; an exact copy must measure exactly 0 whatever the chunking."""
    return torch.cdist(queries.double(), references.double(), compute_mode="donot_use_mm_for_euclid_dist")


def pixel_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance ``[Q, R]`` between images ``[Q, C, H, W]`` and ``[R, C, H, W]`` (same size, in [-1, 1])."""
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(
            f"Pixel distances need images of one size; got {tuple(queries.shape[1:])} and {tuple(references.shape[1:])}"
        )
    size = queries[0].numel()
    return _euclidean(queries.flatten(1), references.flatten(1)) / math.sqrt(size)


def feature_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``[Q, R]`` between identity features (``sqrt(2 - 2 cos)`` for unit vectors)."""
    return _euclidean(queries, references)


def same_identity_distances(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The distances of every unordered pair of DIFFERENT images sharing an identity, from a square matrix."""
    labels = torch.as_tensor(labels)
    same = labels[:, None] == labels[None, :]
    return distances[torch.triu(same, diagonal=1)]


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
    pixel_pairs = same_identity_distances(pixel_distances(images, images), labels)
    feature_pairs = same_identity_distances(feature_distances(features, features), labels)
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


def audit_images(
    images: torch.Tensor,
    features: torch.Tensor,
    train_images: torch.Tensor,
    train_features: torch.Tensor,
    thresholds: AuditThresholds,
    chunk_size: int = 256,
) -> AuditResult:
    """Nearest real training image of each image in pixel and feature space, flagged by ``thresholds``.

    Queries go in chunks of ``chunk_size`` so that large sets never hold a full [images x train] matrix.
    """
    pixel = [pixel_distances(chunk, train_images).min(dim=1) for chunk in images.split(chunk_size)]
    feature = [feature_distances(chunk, train_features).min(dim=1) for chunk in features.split(chunk_size)]
    pixel_distance, pixel_index = (torch.cat(parts) for parts in zip(*pixel))
    feature_distance, feature_index = (torch.cat(parts) for parts in zip(*feature))
    under_pixel = pixel_distance < thresholds.pixel
    under_feature = feature_distance < thresholds.feature
    return AuditResult(
        pixel_distance=pixel_distance.float(),
        pixel_index=pixel_index,
        feature_distance=feature_distance.float(),
        feature_index=feature_index,
        under_pixel=under_pixel,
        under_feature=under_feature,
        memorized=thresholds.combine(under_pixel, under_feature),
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
