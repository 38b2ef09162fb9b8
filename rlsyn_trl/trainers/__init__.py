"""Trainers: cold start (SFT of identity embedders) and reward-guided DDPO."""

from .cold_start import ColdStartConfig, ColdStartTrainer, prepare_identity_generator

__all__ = ["ColdStartConfig", "ColdStartTrainer", "prepare_identity_generator"]

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
