"""The stage trainers: the public priors (:mod:`.priors`) and phi's pre-training (:mod:`.encoder_pretraining`),
the cold start (:mod:`.cold_start`), all three on the shared optimisation loop (:mod:`.training`), and reward-guided
DDPO (:mod:`.ddpo`)."""

from ..rewards.identity_reward import IdentityReward
from .cold_start import ColdStartConfig, ColdStartTrainer, prepare_identity_generator
from .ddpo import (
    IdentityDDPOPipeline,
    RLSynDDPOConfig,
    RLSynDDPOTrainer,
    evaluate_policies,
    evaluation_table,
    identity_prompt_fn,
)

__all__ = [
    "ColdStartConfig",
    "ColdStartTrainer",
    "IdentityDDPOPipeline",
    "IdentityReward",
    "RLSynDDPOConfig",
    "RLSynDDPOTrainer",
    "evaluate_policies",
    "evaluation_table",
    "identity_prompt_fn",
    "prepare_identity_generator",
]
