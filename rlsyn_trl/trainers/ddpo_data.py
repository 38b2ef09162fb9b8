"""The real side of a DDPO config: its real training images and the identity reward built on them.

The trainer, the recipe and the reward benchmarks all need the same images and bank for a config; building them
from the config alone keeps that in one place, apart from the training loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data import dataset_to_tensors, load_identity_dataset
from ..encoders import load_encoder
from ..rewards.identity_reward import IdentityReward
from .ddpo_config import RLSynDDPOConfig


def real_training_images(
    config: RLSynDDPOConfig, resolution: int, channels: int, split_config: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The train split (images in ``[-1, 1]`` at the generator's size, labels, label names)."""
    options = {"shots": config.shots, "seed": config.split_seed} if split_config is None else {}
    data = load_identity_dataset(
        config.dataset_name, split_config or config.dataset_config, data_dir=config.data_dir, **options
    )["train"]
    images, labels = dataset_to_tensors(data, resolution, channels)
    return images, labels, list(data.features["label"].names)


def build_identity_reward(
    config: RLSynDDPOConfig, images: torch.Tensor, labels: torch.Tensor, label_names: Sequence[str]
) -> IdentityReward:
    """The reward of ``config``: its encoder, a bank of the real training images, its constants."""
    encoder = load_encoder(config.encoder)
    public = None
    if torch.bincount(labels).max() < 2:  # no bank identity has two images: R_exp needs the public spread
        if config.public_dataset_config is None:
            raise ValueError(
                "Every identity has a single real image, so the R_exp reference spread must come from public "
                "identities; set public_dataset_config (e.g. 'public' for orl_faces)."
            )
        public_images, public_labels, _ = real_training_images(
            config, images.shape[-1], images.shape[1], config.public_dataset_config
        )
        public = (public_images, public_labels)
    return IdentityReward.build(
        encoder,
        images,
        labels,
        label_names,
        public,
        weights=tuple(config.reward_weights),
        alpha=config.reward_alpha,
        sigma=config.reward_sigma,
        eps=config.reward_eps,
        tau=config.reward_tau,
    )
