"""rlsyn-trl: reward-guided synthetic identity data (faces, person re-identification) on the Hugging Face stack.

A class-conditional DiT is adapted to a few real photos per target identity (cold start), trained further with
DDPO on an identity reward (TRL's ``DDPOTrainer``), and sampled into a scored, memorisation-audited synthetic
dataset; a downstream recognizer then trains on the real photos plus the synthetic set, reweighted by dynamic
sample selection, and is tested on held-out real photos.

Entry points:

- ``rlsyn-trl <stage> --config <yaml> [--field value ...]``: one stage, ``prior``, ``sft`` (``cold-start``),
  ``ddpo``, ``generate`` or ``train-recognizer``; the same as ``accelerate launch recipes/<stage>.py ...`` in one
  process. ``--config orl_faces/sft`` names a recipe shipped with the package.
- ``rlsyn-trl run-all``: the whole chain on the embedded ORL default, offline, with a results table.
- ``accelerate launch recipes/<stage>.py --config recipes/<dataset>/<stage>.yaml``: a stage on several processes.
- Python: ``rlsyn_trl.recipes.<stage>.main(config)`` per stage, and the API below (imported on first use, so
  ``import rlsyn_trl`` stays light): :class:`IdentityGenerator`, :func:`load_identity_dataset`,
  :class:`ColdStartConfig` / :class:`ColdStartTrainer`, :class:`RLSynDDPOConfig` / :class:`RLSynDDPOTrainer`,
  :class:`GenerationConfig` / :func:`write_synthetic_dataset`, :class:`RecognizerConfig` / :func:`train_recognizer`,
  :class:`PriorConfig`, :func:`load_encoder`, :func:`load_feature_extractor`, :class:`MainJobConfig` /
  :func:`run_main_job`, :func:`setup_runtime`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .auto_classes import install as _install_auto_classes
from .utils.lazy import lazy_attributes
from .utils.log_filters import silence_torchvision_fallback_notice

try:
    __version__ = version("rlsyn-trl")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

# The notice is logged while diffusers is imported, i.e. before any entry point's own set-up runs.
silence_torchvision_fallback_notice()
# ``AutoModel.from_pretrained`` loads a saved recognizer once the package is imported (transformers stays unimported).
_install_auto_classes()

_LAZY = {
    "IdentityGenerator": "generators",
    "load_identity_dataset": "data",
    "check_identity_options": "data",
    "ColdStartConfig": "trainers",
    "ColdStartTrainer": "trainers",
    "RLSynDDPOConfig": "trainers",
    "RLSynDDPOTrainer": "trainers",
    "GenerationConfig": "generation",
    "write_synthetic_dataset": "generation",
    "RecognizerConfig": "recognizer",
    "train_recognizer": "recognizer",
    "PriorConfig": "trainers.priors",
    "load_encoder": "encoders",
    "load_feature_extractor": "encoders",
    "MainJobConfig": "job.config",
    "run_main_job": "job.pipeline",
    "setup_runtime": "utils.runtime",
}

__all__ = ["__version__", *_LAZY]
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
