"""The composite identity reward as DDPO sees it: images -> identity features -> reward against the memory bank.

It needs nothing of the trainer, so it lives with the reward terms: the reward benchmarks and the policy
evaluation score samples with it without the trainer, and the rewards package never imports the trainers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch

from ..data.preprocessing import to_model_range
from ..encoders import IdentityEncoder, IdentityFeatureExtractor, as_feature_extractor
from .composite import DEFAULT_REWARD, RewardOptions, composite_reward
from .memory_bank import MemoryBank

REWARD_TERMS = ("sem", "cov", "exp")


@torch.no_grad()
def encode_images(encoder: IdentityFeatureExtractor | IdentityEncoder, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised features of images in ``[-1, 1]``; phi resizes and normalises them to its own input.

    Images arrive in the sampler's dtype (bf16 under mixed precision); phi's preprocessing runs in float32.
    """
    return as_feature_extractor(encoder).encode_batched(images.float())


def needs_public_spread(labels: torch.Tensor) -> bool:
    """With no bank identity holding two images, R_exp's reference spread must come from public identities."""
    return bool(torch.bincount(labels).max() < 2)


class IdentityReward:
    """Images -> identity features phi -> composite reward against the memory bank of real training images.

    A stock DDPO reward function when called (one batch at a time), and split into :meth:`features` and
    :meth:`score` so :class:`RLSynDDPOTrainer` encodes each process's samples locally and scores the gathered
    epoch once. ``encoder`` is any :class:`~rlsyn_trl.encoders.IdentityFeatureExtractor` (a bare project
    ``IdentityEncoder`` is wrapped as one); it brings the images to its own input size and normalisation.
    """

    def __init__(
        self,
        encoder: IdentityFeatureExtractor | IdentityEncoder,
        bank: MemoryBank,
        options: RewardOptions = DEFAULT_REWARD,
    ):
        self.encoder = as_feature_extractor(encoder).eval().requires_grad_(False)
        self.bank = bank
        self.options = options

    @classmethod
    def build(
        cls,
        encoder: IdentityFeatureExtractor | IdentityEncoder,
        images: torch.Tensor,
        labels: torch.Tensor,
        label_names: Sequence[str],
        public: tuple[torch.Tensor, torch.Tensor] | None = None,
        options: RewardOptions = DEFAULT_REWARD,
    ) -> IdentityReward:
        """Encode the real training images (``[-1, 1]``) into the bank; ``public`` adds the 1-shot fallback spread.

        Every stage that scores samples (DDPO, generation, the policy evaluation) builds its reward here, so they
        score with the same bank, the same phi preprocessing and the same ``options``.
        """
        if public is None and needs_public_spread(labels):
            raise ValueError(
                "Every identity has a single real image, so the R_exp reference spread must come from public "
                "identities; set public_dataset_config (e.g. 'public' for orl_faces)."
            )
        encoder = as_feature_extractor(encoder).eval().requires_grad_(False)
        public_images, public_labels = public if public is not None else (None, None)
        bank = MemoryBank.build(
            images, labels, partial(encode_images, encoder), label_names, public_images, public_labels
        )
        return cls(encoder, bank, options)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features of images in ``[-1, 1]`` at any size."""
        return encode_images(self.encoder, images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of images in ``[0, 1]`` (what DDPO pipelines return)."""
        return self.encode(to_model_range(images))

    def score(self, features: torch.Tensor, labels: torch.Tensor, copies: int = 1) -> dict:
        """:func:`composite_reward` against the bank. ``copies`` > 1 scores that many sample sets side by side.

        For several sets (e.g. two policies' samples), set ``c``'s identity ``y`` is label ``c * K + y`` and each
        set meets its own copy of the bank, with sigma from the single bank: every term is what it would be for
        the set alone, while the z-scores, hence the totals, are shared and so comparable across sets.
        """
        if copies == 1:
            return self.bank.reward(features, labels, self.options)
        num = len(self.bank.label_names)
        return composite_reward(
            features,
            labels,
            self.bank.features.repeat(copies, 1),
            torch.cat([self.bank.labels + copy * num for copy in range(copies)]),
            self.options,
            fallback_spread=self.bank.public_spread,
            median_sigma=self.bank.median_sigma() if self.options.sigma is None else None,
        )

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict]) -> tuple:
        """TRL's reward-function signature: one sample batch in ``[0, 1]`` -> (total reward, per-term details)."""
        labels = torch.tensor([item["label"] for item in metadata], dtype=torch.long)
        result = self.score(self.features(images), labels)
        return result["total"], result


def reward_summary(result: Mapping) -> dict[str, float]:
    """One epoch's reward log: each term's raw mean and std, its z-score's mean and std (std 0: the term was constant
    and dropped out of the total), the total, group-level E(G_y), sigma and how each S_ref was chosen."""
    record = {}
    for term in (*REWARD_TERMS, "total"):
        record[f"reward/{term}_mean"] = result[term].float().mean().item()
        record[f"reward/{term}_std"] = result[term].float().std(correction=0).item()
    for term in REWARD_TERMS:
        record[f"reward/z_{term}_mean"] = result[f"z_{term}"].float().mean().item()
        record[f"reward/z_{term}_std"] = result[f"z_{term}"].float().std(correction=0).item()
    record["reward/group_exp_mean"] = result["group_exp"].float().mean().item()
    record["reward/group_spread_mean"] = result["group_spread"].float().mean().item()
    record["reward/sigma"] = float(result["sigma"])
    for source in sorted(set(result["s_ref_source"])):
        record[f"reward/s_ref_{source}"] = float(result["s_ref_source"].count(source))
    return record
