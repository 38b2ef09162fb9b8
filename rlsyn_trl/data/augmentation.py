"""Tensor augmentations for identity images (kornia: no torchvision needed)."""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


class IdentityAugmentation(nn.Module):
    """Flip, small shifts (pad-and-crop style) and brightness jitter for images in ``[-1, 1]``.

    These keep identity intact: a mirrored or slightly shifted face is still the same person.
    """

    def __init__(self, flip: bool = True, translate: float = 0.0625, brightness: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        if flip:
            layers.append(K.RandomHorizontalFlip())
        if translate > 0:
            layers.append(K.RandomAffine(degrees=0.0, translate=(translate, translate), padding_mode="border", p=1.0))
        if brightness > 0:
            layers.append(K.ColorJitter(brightness=brightness, p=1.0))
        self.pipeline = nn.Sequential(*layers)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not len(self.pipeline):
            return images
        return self.pipeline((images + 1) / 2).clamp(0, 1) * 2 - 1
