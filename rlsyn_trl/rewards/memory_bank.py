"""The memory bank: identity features of the real training images, the fixed reference of every reward term.

It is built once per run (the encoder is frozen), saved next to the adapters, and carries the public identities'
mean within-identity spread so that a 1-shot bank still has a non-zero expression-richness target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils.io import atomic_write
from .composite import DEFAULT_REWARD, RewardOptions, composite_reward, median_heuristic_sigma, trace_covariance

__all__ = ["MemoryBank"]

_FORMAT = "rlsyn_trl.memory_bank/1"
_NORM_TOL = 1e-3


def _encode(images: torch.Tensor, encoder: Callable | object, batch_size: int) -> torch.Tensor:
    """Features of ``images`` in batches, checked against the encoder contract (finite, L2-normalised)."""
    if images.ndim != 4:
        raise ValueError(f"images must be a [B, C, H, W] tensor, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("No images to encode")
    if images.amin() < -1 - 1e-3 or images.amax() > 1 + 1e-3:
        raise ValueError(
            f"images must be in [-1, 1] (got [{images.amin().item():.3g}, {images.amax().item():.3g}]); "
            "convert with rlsyn_trl.data.preprocess_images or to_model_range"
        )
    encode = encoder.encode if hasattr(encoder, "encode") else encoder
    if not callable(encode):
        raise TypeError(f"encoder must be callable or have an .encode method, got {type(encoder).__name__}")
    with torch.no_grad():
        batches = [encode(images[i : i + batch_size].float()) for i in range(0, images.shape[0], batch_size)]
    features = torch.cat([batch.detach().float().cpu() for batch in batches])
    if features.ndim != 2 or features.shape[0] != images.shape[0]:
        raise ValueError(
            f"the encoder must return [B, D] features; got {tuple(features.shape)} for B={images.shape[0]}"
        )
    if not torch.isfinite(features).all():
        raise ValueError("the encoder returned NaN or inf features")
    norms = features.norm(dim=1)
    if ((norms - 1).abs() > _NORM_TOL).any():
        raise ValueError(
            f"the encoder must return L2-normalised features (norms found in [{norms.min():.4g}, {norms.max():.4g}]); "
            "the kernel widths and spreads are only comparable between bank and samples on the unit sphere"
        )
    return features


def _as_labels(labels: torch.Tensor | Sequence[int], count: int, name: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.shape != (count,):
        raise ValueError(f"{name} must be {count} integer identity ids, got dtype {labels.dtype} shape {labels.shape}")
    return labels.long().cpu()


@dataclass(eq=False)
class MemoryBank:
    """Features [M, D] of the real training images with their identity ``labels`` [M] (indices into ``label_names``).

    ``public_spread`` is the mean ``S`` (unbiased trace of covariance) over public identities with >= 2 images,
    the reference spread of last resort when no bank identity has two images.
    """

    features: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]
    public_spread: float | None = None
    _median_sigma: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.labels.shape != (self.features.shape[0],):
            raise ValueError(
                f"features must be [M, D] and labels [M]; "
                f"got {tuple(self.features.shape)} and {tuple(self.labels.shape)}"
            )
        if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise ValueError(f"labels must index label_names (0..{len(self.label_names) - 1})")

    @classmethod
    def build(
        cls,
        images: torch.Tensor,
        labels: torch.Tensor | Sequence[int],
        encoder: Callable | object,
        label_names: Sequence[str],
        public_images: torch.Tensor | None = None,
        public_labels: torch.Tensor | Sequence[int] | None = None,
        batch_size: int = 256,
    ) -> MemoryBank:
        """Encode the real images ([B, C, H, W] in [-1, 1]) and, if given, the public ones for ``public_spread``.

        ``encoder`` maps images to L2-normalised features: a callable or an object with ``.encode`` (an
        ``IdentityEncoder``); it should already be in eval mode.
        """
        if (public_images is None) != (public_labels is None):
            raise ValueError("public_images and public_labels must be given together")
        features = _encode(images, encoder, batch_size)
        public_spread = None
        if public_images is not None:
            public_features = _encode(public_images, encoder, batch_size)
            public_labels = _as_labels(public_labels, public_features.shape[0], "public_labels")
            spreads = [
                trace_covariance(public_features[public_labels == identity].double()).item()
                for identity in public_labels.unique()
                if (public_labels == identity).sum() >= 2
            ]
            if not spreads:
                raise ValueError("no public identity has 2 or more images, so there is no within-identity spread")
            public_spread = sum(spreads) / len(spreads)
        return cls(features, _as_labels(labels, features.shape[0], "labels"), list(label_names), public_spread)

    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors file atomically (a half-written bank must never be loaded by a resumed run)."""
        path = os.fspath(path)
        metadata = {
            "format": _FORMAT,
            "label_names": json.dumps(self.label_names),
            "public_spread": json.dumps(self.public_spread),
        }
        tensors = {"features": self.features.contiguous().cpu(), "labels": self.labels.contiguous().cpu()}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> MemoryBank:
        """Read a bank written by :meth:`save`."""
        with safe_open(os.fspath(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a memory bank file (format {metadata.get('format')!r})")
            features, labels = handle.get_tensor("features"), handle.get_tensor("labels")
        return cls(features, labels, json.loads(metadata["label_names"]), json.loads(metadata["public_spread"]))

    def median_sigma(self) -> float:
        """The median-heuristic kernel width of this bank, computed once (it sorts all M^2 / 2 pair distances, and
        the bank never changes during a run)."""
        if self._median_sigma is None:
            self._median_sigma = median_heuristic_sigma(self.features.double()).item()
        return self._median_sigma

    def reward(
        self, features: torch.Tensor, labels: torch.Tensor, options: RewardOptions = DEFAULT_REWARD, **changes: Any
    ) -> dict[str, torch.Tensor | list[str]]:
        """:func:`composite_reward` of generated ``features`` against this bank, with its public spread as fallback
        and its median-heuristic width computed once; ``changes`` are fields of ``options`` changed for this call."""
        options = options.replace(**changes) if changes else options
        median_sigma = self.median_sigma() if options.sigma is None else None
        return composite_reward(
            features,
            labels,
            self.features,
            self.labels,
            options,
            fallback_spread=self.public_spread,
            median_sigma=median_sigma,
        )
