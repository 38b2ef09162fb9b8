"""Identity metrics in a feature space: prototypes, identity consistency and 1-NN identification."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Per-identity prototype ``normalise(mean(features of y))``, ``[num_classes, D]``."""
    num_classes = num_classes or int(labels.max()) + 1
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype).index_add_(0, labels, features)
    if (torch.bincount(labels, minlength=num_classes) == 0).any():
        raise ValueError("Every identity needs at least one reference feature to form a prototype.")
    return F.normalize(sums, dim=-1)


def nearest_prototype(features: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor) -> torch.Tensor:
    """The identity whose prototype has the highest cosine similarity to each feature."""
    return (F.normalize(features, dim=-1) @ prototypes(bank, bank_labels).T).argmax(dim=1)


def identity_consistency(
    features: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor
) -> float:
    """Fraction of (synthetic) samples whose nearest real-identity prototype is their own identity."""
    return (nearest_prototype(features, bank, bank_labels) == labels).float().mean().item()


def nearest_neighbour_accuracy(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    metric: str = "cosine",
) -> float:
    """1-NN identification accuracy, by cosine similarity (features) or Euclidean distance (raw pixels)."""
    query, gallery = query.flatten(1).float(), gallery.flatten(1).float()
    if metric == "cosine":
        nearest = (F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T).argmax(dim=1)
    elif metric == "euclidean":
        nearest = torch.cdist(query, gallery).argmin(dim=1)
    else:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    return (gallery_labels[nearest] == query_labels).float().mean().item()
