"""The person ReID baselines as ``transformers`` models: a backbone (any ``AutoModel``: a ResNet, a ViT) with the
BNNeck head of the "Bag of Tricks" strong baseline (Luo et al. 2019) and its TransReID ViT counterpart.

- ResNet: the last stage's stride set to 1 (``last_stride``), so a 256x128 person gives a 16x8 map instead of 8x4;
  the embedding is the global-average-pooled map.
- ViT: the CLS token of the last layer (after the final layer norm). Pretrained 224x224 position embeddings are
  interpolated to the input size (256x128: a 16x8 patch grid) at every forward, so the published weights are used
  as they are; a ViT built from scratch gets position embeddings of the input size itself.
- BNNeck: the triplet loss sees the pooled feature f_t, the bias-free classifier sees BN(f_t) (a BatchNorm whose
  shift is frozen at 0), and at test time the embedding is f_i = BN(f_t). :meth:`embed` and :meth:`classify`
  follow the module's mode, so ``classify(embed(x))`` is W BN(f_t) in both: in training ``embed`` gives f_t and
  ``classify`` normalises it; in evaluation ``embed`` gives f_i and ``classify`` is the linear layer alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput


class BNNeckConfig(PretrainedConfig):
    """The wrapped backbone's own config (a dict with its ``model_type``), the last stride and the label maps."""

    model_type = "rlsyn_bnneck"

    def __init__(self, backbone_config: dict | None = None, last_stride: int = 1, **kwargs) -> None:
        self.backbone_config = dict(backbone_config or {"model_type": "resnet"})
        self.last_stride = last_stride
        super().__init__(**kwargs)

    def backbone(self) -> PretrainedConfig:
        values = dict(self.backbone_config)
        return AutoConfig.for_model(values.pop("model_type"), **values)


def backbone_width(config: PretrainedConfig) -> int:
    """Channels of the pooled feature: a transformer's ``hidden_size``, a CNN's last stage width."""
    width = getattr(config, "hidden_size", None)
    return width if isinstance(width, int) else config.hidden_sizes[-1]


def set_last_stride(backbone: nn.Module, stride: int) -> None:
    """Give the strided convolutions of a ResNet's last stage (its first block's) the stride ``stride``."""
    stages = getattr(getattr(backbone, "encoder", None), "stages", None)
    if stages is None:
        raise ValueError(f"last_stride applies to a ResNet backbone, not to {type(backbone).__name__}.")
    for module in stages[-1].modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (stride, stride)


class BNNeckForImageClassification(PreTrainedModel):
    """A backbone + BNNeck + bias-free linear classifier; ``forward`` gives the class logits (and CE loss)."""

    config_class = BNNeckConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"

    def __init__(self, config: BNNeckConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone())
        if config.backbone_config["model_type"] == "resnet" and config.last_stride != 2:
            set_last_stride(self.backbone, config.last_stride)
        width = backbone_width(self.backbone.config)
        self.bnneck = nn.BatchNorm1d(width)
        self.classifier = nn.Linear(width, config.num_labels, bias=False)
        self.post_init()
        self.bnneck.bias.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        """The head as the baseline initialises it: BN at identity, classifier weights N(0, 0.001)."""
        if module is self.__dict__["_modules"].get("classifier"):
            nn.init.normal_(module.weight, std=0.001)
        elif module is self.__dict__["_modules"].get("bnneck"):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @classmethod
    def from_backbone(
        cls,
        source: str,
        last_stride: int = 1,
        from_scratch: bool = False,
        image_size: list[int] | None = None,
        **kwargs,
    ) -> BNNeckForImageClassification:
        """The BNNeck head on the ``AutoModel`` at ``source`` (Hub id or folder): its weights, or random weights
        of its architecture with ``from_scratch`` (a ViT then takes ``image_size`` as its own input size)."""
        if from_scratch:
            backbone_config = AutoConfig.from_pretrained(source)
            if image_size is not None and hasattr(backbone_config, "patch_size"):
                backbone_config.image_size = list(image_size)
            backbone = AutoModel.from_config(backbone_config)
        else:
            backbone = AutoModel.from_pretrained(source)
        config = BNNeckConfig(backbone_config=backbone.config.to_dict(), last_stride=last_stride, **kwargs)
        return cls(config, backbone=backbone)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """f_t: the pooled feature (a CNN's average-pooled map, a transformer's CLS token)."""
        kwargs = {}
        native = getattr(self.backbone.config, "image_size", None)
        if native is not None and hasattr(self.backbone.config, "patch_size"):
            native = [native, native] if isinstance(native, int) else list(native)
            kwargs["interpolate_pos_encoding"] = list(pixel_values.shape[-2:]) != native
        outputs = self.backbone(pixel_values=pixel_values, **kwargs)
        if outputs.last_hidden_state.dim() == 3:  # tokens: the CLS token
            return outputs.last_hidden_state[:, 0]
        return outputs.pooler_output.flatten(1)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """f_t in training (what the triplet loss sees), f_i = BN(f_t) in evaluation (the retrieval embedding)."""
        features = self.features(pixel_values)
        return features if self.training else self.bnneck(features)

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Class logits W BN(f_t) from what :meth:`embed` returned in the same mode."""
        return self.classifier(self.bnneck(embeddings) if self.training else embeddings)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        logits = self.classify(self.embed(pixel_values))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)
