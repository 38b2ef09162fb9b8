"""Image grids and curves written as PNG files, the artefacts a user looks at first."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image

from ..data.preprocessing import tensor_to_pil
from .io import atomic_write


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int, scale: int = 2) -> Path:
    """Tile ``[N, C, H, W]`` images in ``[-1, 1]`` row by row (e.g. one row per identity) into a PNG."""
    tiles = tensor_to_pil(images)
    width, height = tiles[0].size
    rows = (len(tiles) + nrow - 1) // nrow
    grid = Image.new(tiles[0].mode, (nrow * width, rows * height))
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % nrow) * width, (index // nrow) * height))
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
    # The temporary name ends in .tmp, so PIL is told the format the final name asks for.
    image_format = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return atomic_write(path, lambda tmp: grid.save(tmp, format=image_format))


def save_curves(curves: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str, xlabel: str) -> Path:
    """Plot named series against their index (e.g. reward terms per epoch) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        axis.plot(range(1, len(values) + 1), list(values), marker="o", label=name)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.legend()
    axis.grid(alpha=0.3)
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(figure)
