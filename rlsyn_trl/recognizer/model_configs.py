"""The config of the saved recognizer, what ``AutoConfig`` reads from its ``config.json``.

This module imports ``transformers``' config machinery only, never a model: it is imported while transformers'
Auto modules are being set up (:mod:`rlsyn_trl.auto_classes` registers it), and by phi's loader to tell a
recognizer folder from other models (:mod:`rlsyn_trl.encoders.loading`).
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
        synthetic_moves_centres: bool = True,
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
        self.synthetic_moves_centres = synthetic_moves_centres
        self.image_size = list(image_size)
        self.num_channels = num_channels
        super().__init__(**kwargs)
