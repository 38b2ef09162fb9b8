"""Trainers: cold start (SFT of identity embedders) and reward-guided DDPO."""

from .cold_start import ColdStartConfig, ColdStartTrainer, prepare_identity_generator

__all__ = ["ColdStartConfig", "ColdStartTrainer", "prepare_identity_generator"]

from ..rewards.identity_reward import IdentityReward  # noqa: E402
from .ddpo import RLSynDDPOTrainer  # noqa: E402
from .ddpo_config import RLSynDDPOConfig  # noqa: E402
from .ddpo_evaluation import evaluate_policies, evaluation_table  # noqa: E402
from .ddpo_pipeline import IdentityDDPOPipeline  # noqa: E402
from .identity_groups import identity_prompt_fn  # noqa: E402

__all__ += [
    "IdentityDDPOPipeline",
    "IdentityReward",
    "RLSynDDPOConfig",
    "RLSynDDPOTrainer",
    "evaluate_policies",
    "evaluation_table",
    "identity_prompt_fn",
]
