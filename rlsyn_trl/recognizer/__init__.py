"""The downstream identity recognizer: a transformers image classifier trained with the ``Trainer`` on the few real
images of the target identities, optionally mixed with a synthetic set that dynamic selection reweights.

The embedded default (``model="resnet-tiny"``) is a small ``ResNetForImageClassification`` built from a
``ResNetConfig``; any ``AutoModelForImageClassification`` id or local path works too, pretrained or from scratch.
The paper's benchmarks add what their recipes need: ``[height, width]`` inputs, a batch-hard triplet term, P x K
identity batches, random erasing and Adam with L2 weight decay, and the baselines' backbones
(:mod:`rlsyn_trl.recognizer.backbones`: IResNet-50 for faces, the BNNeck ReID head over ResNet-50 or ViT-B/16).
Evaluation follows the data (:func:`rlsyn_trl.evaluation.evaluate_recognizer`): identification accuracy on a
``test`` split, mAP/CMC on ``query``/``gallery`` splits, 10-fold accuracy on face verification pair sets.
"""

from .config import LOSSES, TINY_MODEL, RecognizerConfig
from .model import IdentityRecognizer, build_augmentation, build_backbone, build_recognizer, imprint_centres
from .pretrained import RecognizerModel, RecognizerModelConfig
from .sampling import MixedBatchSampler, MixedIdentityDataset, synthetic_blocks
from .trainer import RecognizerTrainer, check_synthetic_dataset, l2_adam, train_recognizer

__all__ = [
    "LOSSES",
    "TINY_MODEL",
    "IdentityRecognizer",
    "MixedBatchSampler",
    "MixedIdentityDataset",
    "RecognizerConfig",
    "RecognizerModel",
    "RecognizerModelConfig",
    "RecognizerTrainer",
    "build_augmentation",
    "build_backbone",
    "build_recognizer",
    "check_synthetic_dataset",
    "imprint_centres",
    "l2_adam",
    "synthetic_blocks",
    "train_recognizer",
]
