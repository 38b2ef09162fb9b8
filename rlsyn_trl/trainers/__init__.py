"""Trainers: cold start (SFT of identity embedders) and reward-guided DDPO."""

from .cold_start import ColdStartConfig, prepare_identity_generator, train_cold_start

__all__ = ["ColdStartConfig", "prepare_identity_generator", "train_cold_start"]

from .ddpo import (  # noqa: E402
    IdentityReward,
    RLSynDDPOConfig,
    RLSynDDPOTrainer,
    evaluate_policies,
    evaluation_table,
    identity_prompt_fn,
    train_ddpo,
)
from .ddpo_pipeline import IdentityDDPOPipeline  # noqa: E402

__all__ += [
    "IdentityDDPOPipeline",
    "IdentityReward",
    "RLSynDDPOConfig",
    "RLSynDDPOTrainer",
    "evaluate_policies",
    "evaluation_table",
    "identity_prompt_fn",
    "train_ddpo",
]
