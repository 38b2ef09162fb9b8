"""Building blocks that prepare what a DDPO run receives: the real images at the generator's size, the reward.

The recipe (``recipes/ddpo.py``) reads the cold-start adapter's provenance, resolves the split it was trained on,
loads it and hands the trainer its pipeline, its reward and these tensors; benchmarks and tests compose the same
blocks on their own data.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import torch

from ...data import dataset_to_tensors
from ...encoders import IdentityEncoder, IdentityFeatureExtractor
from ...generators import IdentityGenerator
from ...rewards.identity_reward import IdentityReward


def identity_tensors(split: datasets.Dataset, generator: IdentityGenerator) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's images in ``[-1, 1]`` at the generator's size and channels, and its labels."""
    channels = 3 if generator.vae is not None else generator.transformer.config.in_channels
    return dataset_to_tensors(split, generator.resolution, channels)


def check_same_identities(generator: IdentityGenerator, split: datasets.Dataset, source: str) -> None:
    """The adapter's label space must be the split's, in order: labels index both."""
    names = list(split.features["label"].names)
    if names != generator.label_names:
        raise ValueError(
            f"The identities of {source} ({generator.label_names[:5]}...) differ from the dataset's ({names[:5]}...): "
            "DDPO must start from a cold-start adapter of the same identities and split."
        )


def needs_public_spread(labels: torch.Tensor) -> bool:
    """With no bank identity holding two images, R_exp's reference spread must come from public identities."""
    return bool(torch.bincount(labels).max() < 2)


def build_identity_reward(
    encoder: IdentityFeatureExtractor | IdentityEncoder,
    images: torch.Tensor,
    labels: torch.Tensor,
    label_names: Sequence[str],
    options: dict,
    public: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> IdentityReward:
    """phi, a memory bank of the real training images (+ the public spread) and the reward's ``options``."""
    if public is None and needs_public_spread(labels):
        raise ValueError(
            "Every identity has a single real image, so the R_exp reference spread must come from public "
            "identities; set public_dataset_config (e.g. 'public' for orl_faces)."
        )
    return IdentityReward.build(encoder, images, labels, label_names, public, **options)
