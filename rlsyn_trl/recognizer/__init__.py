"""The downstream identity recognizer: a transformers image classifier trained with the ``Trainer`` on the few real
images of the target identities, optionally mixed with a synthetic set that dynamic selection reweights.

The embedded default (``model="resnet-tiny"``) is a small ``ResNetForImageClassification`` built from a
``ResNetConfig``; any ``AutoModelForImageClassification`` id or local path works too, pretrained or from scratch.
The paper's benchmarks add what their recipes need: ``[height, width]`` inputs, a batch-hard triplet term, P x K
identity batches, random erasing and Adam with L2 weight decay, and the baselines' backbones
(:mod:`rlsyn_trl.recognizer.backbones`: IResNet-50 for faces, the BNNeck ReID head over ResNet-50 or ViT-B/16).
Evaluation follows the data (:func:`rlsyn_trl.recognizer.evaluation.evaluate_recognizer`): identification accuracy on a
``test`` split, mAP/CMC on ``query``/``gallery`` splits, 10-fold accuracy on face verification pair sets.
"""

from ..utils.lazy import lazy_attributes

# Imported on first use: the Auto classes import :mod:`.model_configs` while transformers sets them up, and phi's
# loader reads the recognizer's model type, without the training machinery (Trainer, kornia, the backbones).
_LAZY = {
    "LOSSES": "config",
    "TINY_MODEL": "config",
    "RecognizerConfig": "config",
    "IdentityRecognizer": "model",
    "build_augmentation": "model",
    "build_backbone": "model",
    "build_recognizer": "model",
    "imprint_centres": "model",
    "RecognizerModelConfig": "model_configs",
    "RecognizerModel": "pretrained",
    "MixedBatchSampler": "sampling",
    "MixedIdentityDataset": "sampling",
    "synthetic_blocks": "sampling",
    "RecognizerTrainer": "trainer",
    "check_synthetic_dataset": "trainer",
    "l2_adam": "trainer",
    "train_recognizer": "trainer",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
