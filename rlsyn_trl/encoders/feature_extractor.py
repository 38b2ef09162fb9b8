"""phi, whatever model provides it: one interface over the project's encoder, a recognizer trained by this project,
a ``transformers`` vision model and an ONNX face embedder (:mod:`.onnx_extractor`).

The reward, the memory bank, generation scoring and the audit pass images in ``[-1, 1]`` at the generator's size
and channels. Each kind declares what its model takes (``input_size``, ``channels``, channel order and the
per-channel ``mean`` / ``std`` on the ``[0, 1]`` scale, as ``transformers`` image processors state them), and
:meth:`IdentityFeatureExtractor.preprocess` converts once, on the device the extractor sits on, so no caller
resizes or normalises for a particular model.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.color
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .identity_encoder import IdentityEncoder

NO_NORMALISATION = (0.5, 0.5)  # mean, std on [0, 1]: maps [-1, 1] onto itself, what the project's models take
CHANNEL_ORDERS = ("RGB", "BGR")


class IdentityFeatureExtractor(nn.Module):
    """phi: images in ``[-1, 1]`` (any size, 1 or 3 channels) -> L2-normalised identity features ``[N, D]``.

    A kind implements :meth:`forward_features` on inputs already in its model's format. ``flip`` adds the mirrored
    image's features before normalising (the project's models are evaluated so). ``kind`` and ``reference`` (what
    was loaded: path, Hub id or embedded id) go into the provenance of what the features score.
    """

    kind = "base"

    def __init__(
        self,
        reference: str,
        input_size: Sequence[int],
        channels: int,
        mean: Sequence[float] | float = NO_NORMALISATION[0],
        std: Sequence[float] | float = NO_NORMALISATION[1],
        channel_order: str = "RGB",
        flip: bool = False,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"{reference}: a feature extractor takes 1 or 3 channels, its model wants {channels}.")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
        self.reference, self.channels, self.channel_order, self.flip = str(reference), channels, channel_order, flip
        self.input_size = tuple(int(side) for side in input_size)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> IdentityFeatureExtractor:
        """A feature extractor is frozen: it stays in eval mode whatever it is asked (a BatchNorm in train mode would
        make a sample's features depend on its batch, and the reward, the bank and the audit must agree)."""
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[-1, 1]`` ``[N, C, H, W]`` -> the model's input: its channels and order, size, normalisation."""
        images = images.to(self.device, torch.float32)
        if images.shape[1] == 1 and self.channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] == 3 and self.channels == 1:
            images = kornia.color.rgb_to_grayscale(images)  # the ITU-R 601 weights PIL's convert("L") uses
        elif images.shape[1] != self.channels:
            raise ValueError(f"Images with {images.shape[1]} channels cannot feed a {self.channels}-channel model.")
        if self.channel_order == "BGR" and self.channels == 3:
            images = images.flip(1)
        if tuple(images.shape[-2:]) != self.input_size:
            images = F.interpolate(images, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return ((images + 1) / 2 - self.mean) / self.std

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's embeddings ``[N, D]`` of preprocessed inputs (unnormalised)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features (float32) of images in ``[-1, 1]``."""
        inputs = self.preprocess(images)
        features = self.forward_features(inputs).float()
        if self.flip:
            features = features + self.forward_features(inputs.flip(-1)).float()
        return F.normalize(features, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`embed` (the name the memory bank calls)."""
        return self.embed(images)

    @torch.no_grad()
    def encode_batched(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """:meth:`embed` in eval mode, chunk by chunk (banks, audits, metrics)."""
        return torch.cat([self.embed(chunk) for chunk in images.split(batch_size)])


class ProjectEncoderExtractor(IdentityFeatureExtractor):
    """The project's :class:`IdentityEncoder` (the embedded ORL encoder and those ``pretrain_prior`` trains)."""

    kind = "rlsyn_encoder"

    def __init__(self, encoder: IdentityEncoder, reference: str = "IdentityEncoder") -> None:
        config = encoder.config
        super().__init__(reference, (config.image_size, config.image_size), config.num_channels, flip=True)
        self.model = encoder.eval().requires_grad_(False)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)


class RecognizerExtractor(IdentityFeatureExtractor):
    """A recognizer saved by ``train_recognizer``: its pooled embedding, flip-tested as its evaluation is."""

    kind = "rlsyn_recognizer"

    def __init__(self, model: PreTrainedModel, reference: str) -> None:
        config = model.config
        super().__init__(reference, config.image_size, config.num_channels, flip=True)
        self.model = model.eval().requires_grad_(False)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model.embed(inputs)


class TransformersExtractor(IdentityFeatureExtractor):
    """Any ``transformers`` vision model whose output has a ``pooler_output`` (ViT, ResNet, ConvNeXt, DINOv2, ...).

    Size and normalisation come from the checkpoint's ``preprocessor_config.json`` (see :func:`processor_settings`).
    """

    kind = "transformers"

    def __init__(self, model: PreTrainedModel, reference: str, input_size, mean, std) -> None:
        channels = getattr(model.config, "num_channels", 3)
        super().__init__(reference, input_size, channels, mean, std)
        self.model = model.eval().requires_grad_(False)

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.model(pixel_values=inputs.to(self.model.dtype))
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"{self.reference} ({type(self.model).__name__}) returns no pooler_output, so it gives no pooled "
                "embedding to use as identity features; use a checkpoint with a pooling layer."
            )
        return pooled.flatten(1)


def processor_settings(processor: dict, config_image_size: int | Sequence[int] | None, reference: str) -> tuple:
    """``(input_size, mean, std)`` of a ``transformers`` checkpoint: the image processor's ``size`` (height/width,
    or a square ``shortest_edge``), else the model config's ``image_size``; the processor's ``image_mean`` /
    ``image_std`` when it normalises, else none (the model then takes ``[-1, 1]`` as ``[0, 1]``-scaled ``0.5``)."""
    size = processor.get("crop_size") or processor.get("size")
    if isinstance(size, dict) and "height" in size:
        input_size = (size["height"], size["width"])
    elif isinstance(size, dict) and "shortest_edge" in size:
        input_size = (size["shortest_edge"],) * 2
    elif isinstance(size, int):
        input_size = (size, size)
    elif config_image_size is not None:
        sides = [config_image_size] * 2 if isinstance(config_image_size, int) else list(config_image_size)
        input_size = tuple(sides)
    else:
        raise ValueError(
            f"{reference} states no input size: add a preprocessor_config.json with size {{'height', 'width'}} "
            "(and image_mean / image_std), e.g. with the model's image processor's save_pretrained."
        )
    if processor.get("do_normalize", True) and "image_mean" in processor:
        return input_size, processor["image_mean"], processor["image_std"]
    return input_size, *NO_NORMALISATION


def as_feature_extractor(encoder: IdentityFeatureExtractor | IdentityEncoder) -> IdentityFeatureExtractor:
    """An :class:`IdentityFeatureExtractor` as is; the project's bare :class:`IdentityEncoder` wrapped as one."""
    if isinstance(encoder, IdentityFeatureExtractor):
        return encoder
    if isinstance(encoder, IdentityEncoder):
        return ProjectEncoderExtractor(encoder, reference=encoder.name_or_path or "IdentityEncoder")
    raise TypeError(f"Expected an IdentityFeatureExtractor or an IdentityEncoder, got {type(encoder).__name__}.")
