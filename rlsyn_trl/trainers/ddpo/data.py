"""Building blocks that prepare what a DDPO run receives: the real images at the generator's size, in its label space.

The recipe (``recipes/ddpo.py``) reads the cold-start adapter's provenance, resolves the split it was trained on,
loads it and hands the trainer its pipeline, its reward (``IdentityReward.build``, as generation builds it) and these
tensors; benchmarks and tests compose the same blocks on their own data.
"""

from __future__ import annotations

import datasets
import torch

from ...data import dataset_to_tensors
from ...generators import IdentityGenerator


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
