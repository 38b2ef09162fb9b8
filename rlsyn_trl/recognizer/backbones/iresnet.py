"""IResNet, the face-recognition ResNet of insightface's ``arcface_torch`` (Deng et al., ArcFace; Duta et al.'s
improved residual block), as a ``transformers`` model.

IResNet-50 with a 512-d embedding is the backbone the face-synthesis baselines the paper compares with (IDiff-Face,
NegFaceDiff) train their recognizers with. The layout follows ``arcface_torch/backbones/iresnet.py``: a 3x3 stride-1
stem with PReLU; four stages of :class:`IBasicBlock` (BN-conv-BN-PReLU-conv-BN, the stride in the second conv),
each halving the resolution; then the embedding head BN -> dropout -> flatten -> FC -> BN (its scale frozen at 1), so
a 112x112 face gives a 7x7 map whose every position has its own FC weights. Depth (``layers``), widths and
embedding size are configurable, so tests build the same architecture at a few thousand parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

# The published depths (arcface_torch's iresnet18 ... iresnet200 use these block counts).
IRESNET_LAYERS = {
    "iresnet-18": [2, 2, 2, 2],
    "iresnet-34": [3, 4, 6, 3],
    "iresnet-50": [3, 4, 14, 3],
    "iresnet-100": [3, 13, 30, 3],
    "iresnet-200": [6, 26, 60, 6],
}


class IResNetConfig(PretrainedConfig):
    """Architecture of an IResNet; ``image_size`` fixes the head's FC input (``widths[-1] x (H/16) x (W/16)``)."""

    model_type = "rlsyn_iresnet"

    def __init__(
        self,
        layers: list[int] | tuple[int, ...] = (3, 4, 14, 3),
        widths: list[int] | tuple[int, ...] = (64, 128, 256, 512),
        embedding_size: int = 512,
        image_size: int | list[int] = 112,
        num_channels: int = 3,
        dropout: float = 0.0,
        bn_eps: float = 1e-5,
        **kwargs,
    ) -> None:
        self.layers, self.widths = list(layers), list(widths)
        self.embedding_size, self.num_channels, self.dropout, self.bn_eps = (
            embedding_size,
            num_channels,
            dropout,
            bn_eps,
        )
        self.image_size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
        super().__init__(**kwargs)
        if len(self.layers) != len(self.widths):
            raise ValueError(f"IResNet layers {self.layers} and widths {self.widths} must have the same length.")


class IBasicBlock(nn.Module):
    """The improved basic block: BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (stride) -> BN, plus the shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int, eps: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels, eps=eps),
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels, eps=eps),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(channels, eps=eps),
        )
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels, eps=eps)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + (x if self.downsample is None else self.downsample(x))


class IResNetPreTrainedModel(PreTrainedModel):
    config_class = IResNetConfig
    base_model_prefix = "iresnet"
    main_input_name = "pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        """arcface_torch's initialisation: convolutions N(0, 0.1), norms at identity, PReLU slopes 0.25."""
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0, 0.1)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.PReLU):
            nn.init.constant_(module.weight, 0.25)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()


class IResNetModel(IResNetPreTrainedModel):
    """The backbone and its embedding head; ``pooler_output`` is the (unnormalised) identity embedding."""

    def __init__(self, config: IResNetConfig) -> None:
        super().__init__(config)
        eps, widths = config.bn_eps, config.widths
        self.stem = nn.Sequential(
            nn.Conv2d(config.num_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0], eps=eps),
            nn.PReLU(widths[0]),
        )
        stages, in_channels = [], widths[0]
        for blocks, channels in zip(config.layers, widths):
            stage = [IBasicBlock(in_channels, channels, 2, eps)]
            stage += [IBasicBlock(channels, channels, 1, eps) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        scale = 2 ** len(widths)
        height, width = config.image_size
        if height % scale or width % scale:
            raise ValueError(
                f"IResNet image_size {config.image_size} must be a multiple of {scale} (one halving a stage)."
            )
        self.head_norm = nn.BatchNorm2d(widths[-1], eps=eps)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(widths[-1] * (height // scale) * (width // scale), config.embedding_size)
        self.features = nn.BatchNorm1d(config.embedding_size, eps=eps)
        self.post_init()
        self.features.weight.requires_grad_(False)  # arcface_torch keeps the embedding BN's scale at 1

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        # Batches decoded from HWC arrays arrive with permuted strides; with those, the backward of this network
        # corrupted memory on CPU (torch 2.13, "double free or corruption"), and contiguous input does not.
        hidden = self.head_norm(self.stages(self.stem(pixel_values.contiguous())))
        embedding = self.features(self.fc(self.dropout(hidden).flatten(1)))
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=embedding)


class IResNetForImageClassification(IResNetPreTrainedModel):
    """IResNet plus a linear classifier on the embedding (cross-entropy); margin losses use the embedding alone."""

    def __init__(self, config: IResNetConfig) -> None:
        super().__init__(config)
        self.iresnet = IResNetModel(config)
        self.classifier = nn.Linear(config.embedding_size, config.num_labels)
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        outputs = self.iresnet(pixel_values)
        logits = self.classifier(outputs.pooler_output)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=None)


def iresnet_config(name: str, **kwargs) -> IResNetConfig:
    """The published IResNet ``name`` (``iresnet-50``, ...): 64-512 widths, a 512-d embedding."""
    if name not in IRESNET_LAYERS:
        raise ValueError(f"Unknown IResNet {name!r}; choose one of {sorted(IRESNET_LAYERS)}.")
    return IResNetConfig(layers=IRESNET_LAYERS[name], **kwargs)
