"""What a DDPO run logs without any tracker installed: metrics as JSONL and each epoch's samples as a PNG grid."""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path

import numpy as np
import torch
from accelerate.tracking import GeneralTracker

from ...data.preprocessing import to_model_range
from ...utils.io import atomic_write_json, atomic_write_text
from ...utils.visualization import save_image_grid

STOCK_LOGGER = "trl.trainer.ddpo_trainer"


def epoch_line(record: dict, epochs: int) -> str:
    """One log line per epoch: the reward terms, the policy's movement, the anchors and the time."""
    parts = [
        f"epoch {int(record['epoch']) + 1}/{epochs}",
        "reward sem {:.3f} cov {:+.3f} exp {:+.3f}".format(
            record["reward/sem_mean"], record["reward/cov_mean"], record["reward/exp_mean"]
        ),
        f"approx_kl {record.get('train/approx_kl', 0.0):.2e} clipfrac {record.get('train/clipfrac', 0.0):.2f}",
    ]
    if "train/denoise_loss" in record:
        parts.append(f"denoise {record['train/denoise_loss']:.4f}")
    parts.append(f"{record['time/epoch_s']:.0f} s")
    return " | ".join(parts)


class JsonlTracker(GeneralTracker):
    """An accelerate tracker that appends each ``log`` call to a JSONL file: metrics without any tracker installed."""

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        atomic_write_json(self.path.with_name("config.json"), values)

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        scalars = {
            key: float(value)
            for key, value in values.items()
            if isinstance(value, numbers.Real) or (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0)
        }
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **scalars}) + "\n")

    def drop_epochs_from(self, epoch: int) -> None:
        """Drop the records of epochs >= ``epoch`` (and any half-written line), atomically.

        A run resumed from the checkpoint taken after ``epoch`` epochs logs those epochs again; a run killed before
        its next checkpoint may already have logged some of them.
        """
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("epoch", -1) < epoch:
                kept.append(line + "\n")
        atomic_write_text(self.path, "".join(kept))


class SampleGridWriter:
    """DDPO image hook that needs no tracker: each epoch's local samples as a PNG grid, one identity group per row."""

    def __init__(self, folder: str | os.PathLike, per_row: int, max_rows: int):
        self.folder = Path(folder)
        self.per_row = per_row
        self.max_rows = max_rows

    def __call__(self, prompt_image_data: list, global_step: int, tracker) -> Path:
        images = torch.cat([entry[0] for entry in prompt_image_data])[: self.per_row * self.max_rows]
        return save_image_grid(
            to_model_range(images.float().cpu()), self.folder / f"step-{global_step:06d}.png", self.per_row
        )


def log_grid_image(trackers: list, path: str | os.PathLike, step: int, name: str = "samples") -> None:
    """The saved sample grid as an image in every tracker that takes images (tensorboard, wandb, trackio...):
    one ``[1, 3, H, W]`` array in ``[0, 1]``, the layout tensorboard's ``add_images`` expects by default."""
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)[None] / 255
    for tracker in trackers:
        if not isinstance(tracker, JsonlTracker) and hasattr(tracker, "log_images"):
            tracker.log_images({name: image}, step=step)
