"""The identity feature extractor phi: images -> L2-normalised identity features.

A small CNN as a ``transformers`` ``PreTrainedModel`` (so it saves/loads with ``save_pretrained`` /
``from_pretrained`` and can be pushed to the Hub). Trained on public identities with a CosFace margin head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from ..utils.model_sources import resolve_pretrained_folder


class IdentityEncoderConfig(PretrainedConfig):
    model_type = "rlsyn_identity_encoder"

    def __init__(
        self,
        num_channels: int = 1,
        image_size: int = 32,
        widths: tuple[int, ...] | list[int] = (32, 64, 128),
        embedding_size: int = 128,
        dropout: float = 0.1,
        **kwargs,
    ):
        self.num_channels = num_channels
        self.image_size = image_size
        self.widths = list(widths)
        self.embedding_size = embedding_size
        self.dropout = dropout
        super().__init__(**kwargs)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers then 2x2 max-pooling: halves the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class IdentityEncoder(PreTrainedModel):
    """CNN backbone + linear embedding; ``encode`` adds flip test-time augmentation and L2 normalisation."""

    config_class = IdentityEncoderConfig
    main_input_name = "pixel_values"

    def __init__(self, config: IdentityEncoderConfig):
        super().__init__(config)
        channels = [config.num_channels, *config.widths]
        self.backbone = nn.Sequential(*[conv_block(a, b) for a, b in zip(channels[:-1], channels[1:])])
        side = config.image_size // 2 ** len(config.widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(config.widths[-1] * side * side, config.embedding_size),
            nn.BatchNorm1d(config.embedding_size),
        )
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings ``[B, embedding_size]`` for images in ``[-1, 1]``."""
        return self.head(self.backbone(pixel_values))

    def encode(self, pixel_values: torch.Tensor, flip: bool = True) -> torch.Tensor:
        """L2-normalised identity features; averaging with the mirrored image makes them pose-robust."""
        pixel_values = pixel_values.to(self.device, self.dtype)
        features = self(pixel_values)
        if flip:
            features = features + self(pixel_values.flip(-1))
        return F.normalize(features, dim=-1)

    @torch.no_grad()
    def encode_batched(self, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``encode`` in eval mode, in chunks, without gradients (for memory banks, audits and metrics)."""
        was_training = self.training
        self.eval()
        features = torch.cat([self.encode(chunk) for chunk in pixel_values.split(batch_size)])
        self.train(was_training)
        return features


def load_encoder(path_or_id: str = "embedded:orl_faces/encoder", revision: str | None = None) -> IdentityEncoder:
    """An identity encoder from a folder, a Hub id, or the embedded ORL prior; returned in eval mode."""
    return IdentityEncoder.from_pretrained(resolve_pretrained_folder(path_or_id, revision)).eval()


# AutoConfig knows the encoder, so a recognizer given an encoder's folder or Hub id can tell it from a classifier.
AutoConfig.register(IdentityEncoderConfig.model_type, IdentityEncoderConfig)
