"""The trained recognizer as a ``transformers`` model: ``save_pretrained`` writes ``model.safetensors`` and a
``config.json`` that holds the backbone's own config, the class names and the identity head, so
``AutoModel.from_pretrained(folder)`` (after ``import rlsyn_trl``) rebuilds the same recognizer without the recipe.

The recipe's :class:`~rlsyn_trl.recognizer.model.IdentityRecognizer` stays the training module; this class wraps it
so the ``Trainer`` saves checkpoints, resumes and pushes it like any other ``PreTrainedModel``.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.losses import CosFaceLoss
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from ..encoders import IdentityEncoder, IdentityEncoderConfig
from .config import RecognizerConfig
from .model import IdentityRecognizer
from .model_configs import RecognizerModelConfig


def backbone_from_config(values: dict) -> PreTrainedModel:
    """A backbone with random weights in the architecture its saved config describes (the weights come next)."""
    values = dict(values)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise ValueError("The recognizer's config.json has no backbone model_type: it was not saved by rlsyn-trl.")
    if model_type == IdentityEncoderConfig.model_type:
        return IdentityEncoder(IdentityEncoderConfig.from_dict(values))
    return AutoModelForImageClassification.from_config(AutoConfig.for_model(model_type, **values))


class RecognizerModel(PreTrainedModel):
    """A trained identity recognizer: ``logits`` are its class scores, :meth:`embed` its pooled embedding."""

    config_class = RecognizerModelConfig
    main_input_name = "pixel_values"
    base_model_prefix = "recognizer"

    def __init__(self, config: RecognizerModelConfig, recognizer: IdentityRecognizer | None = None):
        super().__init__(config)
        if recognizer is None:
            cosface = None
            if config.loss == "cosface":
                cosface = CosFaceLoss(
                    config.num_labels, config.embedding_width, margin=config.cosface_margin, scale=config.cosface_scale
                )
            recognizer = IdentityRecognizer(
                backbone_from_config(config.backbone),
                cosface,
                flip_test=config.flip_test,
                triplet_weight=config.triplet_weight,
                triplet_margin=config.triplet_margin,
                synthetic_trains_backbone=config.synthetic_trains_backbone,
                synthetic_moves_centres=config.synthetic_moves_centres,
            )
        self.recognizer = recognizer
        self.post_init()

    @classmethod
    def wrap(
        cls, recognizer: IdentityRecognizer, settings: RecognizerConfig, label_names: list[str]
    ) -> RecognizerModel:
        """The built (possibly pretrained) recognizer of a recipe run, with the config that rebuilds it; the class
        names (``id2label``) are the training split's identities."""
        backbone = recognizer.backbone.config
        width = recognizer.cosface.W.shape[0] if recognizer.cosface is not None else None
        config = RecognizerModelConfig(
            backbone=backbone.to_dict(),
            loss=settings.loss,
            embedding_width=width,
            cosface_scale=settings.cosface_scale,
            cosface_margin=settings.cosface_margin,
            flip_test=settings.flip_test,
            triplet_weight=settings.triplet_weight,
            triplet_margin=settings.triplet_margin,
            synthetic_trains_backbone=settings.synthetic_trains_backbone,
            synthetic_moves_centres=settings.synthetic_moves_centres,
            image_size=list(settings.resolution),
            num_channels=settings.channels,
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
        )
        return cls(config, recognizer)

    def _init_weights(self, module: torch.nn.Module) -> None:
        """The wrapped modules initialise themselves when built; a loaded checkpoint then replaces every weight."""

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pooled embedding ``[N, D]`` of images in ``[-1, 1]`` at ``config.image_size``."""
        return self.recognizer.embed(pixel_values)

    def per_sample_loss(self, outputs: ImageClassifierOutput, labels: torch.Tensor) -> torch.Tensor:
        return self.recognizer.per_sample_loss(outputs, labels)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, synthetic: torch.Tensor | None = None
    ) -> ImageClassifierOutput:
        return self.recognizer(pixel_values, labels=labels, synthetic=synthetic)
