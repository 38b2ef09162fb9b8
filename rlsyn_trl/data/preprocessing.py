"""One image -> tensor conversion shared by every stage (priors, cold start, rewards, recognizer)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

DEFAULT_RESOLUTION = 32

Resolution = int | Sequence[int]
"""A square side ``R``, or ``(height, width)`` (ReID inputs are 256x128)."""


def image_size(resolution: Resolution) -> tuple[int, int]:
    """``(height, width)`` of a :data:`Resolution`."""
    size = (resolution, resolution) if isinstance(resolution, int) else tuple(int(side) for side in resolution)
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"resolution must be a side or [height, width] of positive sizes, got {resolution}")
    return size


def preprocess_images(
    images: Sequence[Image.Image] | Image.Image, resolution: Resolution = DEFAULT_RESOLUTION, channels: int = 1
) -> torch.Tensor:
    """Convert PIL images to a float tensor ``[N, C, H, W]`` in ``[-1, 1]``.

    Images are resized (not cropped) to a square ``R`` or to ``(H, W)`` so that the whole face or person stays in
    view; ``channels`` is 1 (grayscale) or 3 (RGB).
    """
    if isinstance(images, Image.Image):
        images = [images]
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    height, width = image_size(resolution)
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for image in images:
        image = image.convert(mode).resize((width, height), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)).clamp_(-1.0, 1.0)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map model-space images in ``[-1, 1]`` to ``[0, 1]`` (the range DDPO reward functions receive)."""
    return (images.clamp(-1, 1) + 1) / 2


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map ``[0, 1]`` images back to the ``[-1, 1]`` range every model here consumes."""
    return images.clamp(0, 1) * 2 - 1


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Convert ``[N, C, H, W]`` tensors in ``[-1, 1]`` to PIL images (``L`` or ``RGB``)."""
    arrays = (to_unit_range(images) * 255).round().to(torch.uint8).cpu().numpy()
    if arrays.shape[1] == 1:
        return [Image.fromarray(a[0], mode="L") for a in arrays]
    return [Image.fromarray(a.transpose(1, 2, 0), mode="RGB") for a in arrays]


def dataset_to_tensors(
    dataset, resolution: Resolution = DEFAULT_RESOLUTION, channels: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and integer labels of a ``datasets.Dataset`` with ``image`` and ``label`` columns."""
    if len(dataset) == 0:
        raise ValueError("The dataset split is empty: there are no images to train or evaluate on.")
    images = preprocess_images(list(dataset["image"]), resolution=resolution, channels=channels)
    labels = torch.tensor(dataset["label"], dtype=torch.long)
    return images, labels
