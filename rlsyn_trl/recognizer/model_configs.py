"""The configs of the package's ``transformers`` models and their registration with the Auto classes.

This module imports ``transformers``' config machinery only, never a model: it runs while transformers' Auto
modules are being set up (:mod:`rlsyn_trl.auto_classes`). The Auto mapping holds :class:`LazyRecognizerModel`,
which imports the real model class (:class:`rlsyn_trl.recognizer.pretrained.RecognizerModel`) on first use.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class RecognizerModelConfig(PretrainedConfig):
    """What rebuilds a trained recognizer: its backbone's config (``backbone``, a dict with its ``model_type``),
    the identity loss that shaped its class scores, and the input it was trained on (``image_size``,
    ``num_channels``, images in ``[-1, 1]``). The class names are the usual ``id2label``."""

    model_type = "rlsyn_identity_recognizer"

    def __init__(
        self,
        backbone: dict | None = None,
        loss: str = "cosface",
        embedding_width: int | None = None,
        cosface_scale: float = 16.0,
        cosface_margin: float = 0.1,
        flip_test: bool = True,
        triplet_weight: float = 0.0,
        triplet_margin: float = 0.3,
        synthetic_trains_backbone: bool = True,
        image_size: list[int] | tuple[int, int] = (32, 32),
        num_channels: int = 1,
        **kwargs,
    ):
        self.backbone = backbone or {}
        self.loss = loss
        self.embedding_width = embedding_width
        self.cosface_scale, self.cosface_margin = cosface_scale, cosface_margin
        self.flip_test = flip_test
        self.triplet_weight, self.triplet_margin = triplet_weight, triplet_margin
        self.synthetic_trains_backbone = synthetic_trains_backbone
        self.image_size = list(image_size)
        self.num_channels = num_channels
        super().__init__(**kwargs)


class LazyRecognizerModel:
    """Stands in the Auto mappings for ``RecognizerModel``: its ``from_pretrained`` / ``from_config`` import the
    real class (torch, the recognizer's backbones) only when a recognizer is actually loaded or built."""

    config_class = RecognizerModelConfig

    @staticmethod
    def model_class() -> type:
        from .pretrained import RecognizerModel

        return RecognizerModel

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls.model_class().from_pretrained(*args, **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        return cls.model_class()._from_config(config, **kwargs)

    from_config = _from_config


def register_configs() -> None:
    """``AutoConfig`` knows the recognizer's config (idempotent)."""
    from transformers import AutoConfig

    AutoConfig.register(RecognizerModelConfig.model_type, RecognizerModelConfig, exist_ok=True)


def register_models() -> None:
    """``AutoModel`` and ``AutoModelForImageClassification`` load a saved recognizer (idempotent)."""
    from transformers import AutoModel, AutoModelForImageClassification

    register_configs()
    for auto in (AutoModel, AutoModelForImageClassification):
        auto.register(RecognizerModelConfig, LazyRecognizerModel, exist_ok=True)
