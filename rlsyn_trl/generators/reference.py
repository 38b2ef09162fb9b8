"""Reference-guided starts (SDEdit; DA-Fusion for few-shot augmentation): which real image and strength per sample.

Starting the reverse diffusion from a real training image noised to an intermediate step keeps a sample in the real
photos' domain while the remaining steps add variation; the strength s is the fraction of the chain that remains
(1: the pure-noise chain, near 0: the photo itself). Each sample's image (one of its identity's real training
images) and, for a range, its strength come from a seeded draw, so a seed fixes them like it fixes the noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import torch

from ..data import dataset_to_tensors
from .sampling import start_step

# Mixed into every draw's seed so reference choices never share a stream with the sampler's noise.
REFERENCE_STREAM = 0x5EED_2EF


def reference_rng(seed: int | None, *keys: int) -> np.random.Generator:
    """The draw of one batch or sample: a pure function of ``seed`` and ``keys`` (fresh entropy when unseeded)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([REFERENCE_STREAM, int(seed), *(int(key) for key in keys)])


@dataclass
class ReferenceDraw:
    """Per sample: the index of its reference image, its strength and the schedule step it starts at."""

    indices: torch.Tensor
    strengths: torch.Tensor
    start_steps: torch.Tensor


@dataclass
class ReferenceStart:
    """The real training images a generator may start from, by generator label, and the strength range.

    ``images`` are in ``[-1, 1]`` at the generator's resolution and channels; ``labels`` index the generator's label
    space; ``strength`` is ``(lo, hi)`` (equal bounds: one strength).
    """

    images: torch.Tensor
    labels: torch.Tensor
    strength: tuple[float, float]

    def __post_init__(self) -> None:
        low, high = self.strength
        if not 0 < low <= high <= 1:
            raise ValueError(f"reference strength must satisfy 0 < lo <= hi <= 1, got {self.strength}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} reference images but {len(self.labels)} labels")

    @classmethod
    def from_split(
        cls, split: datasets.Dataset, generator, strength: tuple[float, float] | None
    ) -> ReferenceStart | None:
        """The split's images at ``generator``'s size, labelled in its label space by name (None: no strength)."""
        if strength is None:
            return None
        channels = 3 if generator.vae is not None else generator.transformer.config.in_channels
        images, labels = dataset_to_tensors(split, generator.resolution, channels)
        names = split.features["label"].names
        known = [name in generator.label_names for name in names]
        keep = torch.tensor([known[label] for label in labels.tolist()], dtype=torch.bool)
        mapping = torch.tensor([generator.label_names.index(n) if k else -1 for n, k in zip(names, known)])
        return cls(images[keep], mapping[labels[keep]], tuple(strength))

    @property
    def single(self) -> bool:
        return self.strength[0] == self.strength[1]

    def draw(self, labels: torch.Tensor | Sequence[int], num_inference_steps: int, rngs) -> ReferenceDraw:
        """One reference image and strength per label; ``rngs`` is one generator for all or one per sample.

        Each sample draws its strength (ranges only) and then its image index, in order.
        """
        labels = torch.as_tensor(labels).cpu()
        rngs = rngs if isinstance(rngs, (list, tuple)) else [rngs] * len(labels)
        indices, strengths = [], []
        for label, rng in zip(labels.tolist(), rngs):
            candidates = (self.labels == label).nonzero().squeeze(1)
            if not len(candidates):
                raise ValueError(
                    f"Identity label {label} has no real training image to start from; reference_strength needs at "
                    "least one per generated identity."
                )
            low, high = self.strength
            strengths.append(low if self.single else float(rng.uniform(low, high)))
            indices.append(int(candidates[rng.integers(len(candidates))]))
        starts = [start_step(s, num_inference_steps) for s in strengths]
        return ReferenceDraw(torch.tensor(indices), torch.tensor(strengths), torch.tensor(starts))

    def starts(self, generator, draw: ReferenceDraw, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
        """The sampler's ``init_latents`` (the drawn images in ``generator``'s model space) and ``start_steps``."""
        images = self.images[draw.indices[rows].to(self.images.device)].to(generator.device)
        return {"init_latents": generator.encode(images, deterministic=True), "start_steps": draw.start_steps[rows]}
