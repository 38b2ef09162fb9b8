"""Stage 2, reward-guided RL: TRL's ``DDPOTrainer`` subclassed for identity groups and the composite reward.

:mod:`.trainer` holds the training loop; :mod:`.config` the settings, :mod:`.data` the real images and the reward of
a run, :mod:`.identity_groups` the epoch's groups and advantages, :mod:`.pipeline` the DiT as TRL's pipeline,
:mod:`.logs` the metrics and sample grids, :mod:`.publishing` saving and pushing, :mod:`.evaluation` the final
cold-start vs RL comparison.
"""

from .config import RLSynDDPOConfig
from .evaluation import evaluate_policies, evaluation_table
from .identity_groups import identity_prompt_fn
from .pipeline import IdentityDDPOPipeline
from .trainer import RLSynDDPOTrainer

__all__ = [
    "IdentityDDPOPipeline",
    "RLSynDDPOConfig",
    "RLSynDDPOTrainer",
    "evaluate_policies",
    "evaluation_table",
    "identity_prompt_fn",
]
