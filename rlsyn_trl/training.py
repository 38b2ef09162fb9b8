"""The one optimisation loop every stage shares: progress bar, tracker logging, checkpoints, resume."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def _latest_checkpoint(folder: Path) -> Path | None:
    checkpoints = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def run_training_phase(
    accelerator: Accelerator,
    name: str,
    model: torch.nn.Module,
    loss_fn: Callable[[int], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    steps: int,
    checkpoint_dir: Path,
    checkpoint_every: int,
    resume: bool,
    max_minutes: float | None = None,
    after_step: Callable[[], None] | None = None,
) -> int:
    """A plain optimisation loop with a progress bar, tracker logging, periodic checkpoints and resume.

    Returns the number of steps done. ``loss_fn(step)`` draws its own batch and returns a scalar loss.
    """
    start_step = 0
    latest = _latest_checkpoint(checkpoint_dir) if resume else None
    if latest is not None:
        accelerator.load_state(str(latest))
        start_step = int(latest.name.split("-")[1])
        logger.info("Resumed %s from %s", name, latest)
    started = time.time()
    progress = tqdm(range(start_step, steps), desc=name, disable=not accelerator.is_local_main_process)
    step = start_step
    for step in progress:
        model.train()
        with accelerator.accumulate(model):
            loss = loss_fn(step)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step()
        progress.set_postfix(loss=f"{loss.item():.4f}")
        accelerator.log({f"{name}/loss": loss.item(), f"{name}/lr": lr_scheduler.get_last_lr()[0]}, step=step)
        done = step + 1
        timed_out = max_minutes is not None and time.time() - started > max_minutes * 60
        if done % checkpoint_every == 0 or done == steps or timed_out:
            accelerator.save_state(str(checkpoint_dir / f"step-{done}"))
            for old in sorted(checkpoint_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-2]:
                shutil.rmtree(old, ignore_errors=True)
        if timed_out:
            logger.warning("%s stopped by its time budget (%.1f min) at step %d of %d", name, max_minutes, done, steps)
            return done
    return max(step + 1, start_step)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 10% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # step -> (images, labels)


def batch_indices(num_items: int, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    """A reproducible mini-batch schedule of item indices: ``indices(step)`` depends only on (seed, step).

    So a resumed run sees exactly the batches an uninterrupted one would. Each pass is a permutation of the
    items; with fewer items than ``batch_size`` (few-shot splits) several permutations fill one batch.
    """
    if num_items == 0:
        raise ValueError("Cannot draw batches from an empty training set.")
    passes = -(-batch_size // num_items)
    per_epoch = passes * num_items // batch_size

    def indices(step: int) -> torch.Tensor:
        epoch, position = divmod(step, per_epoch)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.cat([torch.randperm(num_items, generator=generator) for _ in range(passes)])
        return order[position * batch_size : (position + 1) * batch_size]

    return indices


def sample_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> Batches:
    """``batch(step)``: the images and labels of :func:`batch_indices`' step ``step``, from tensors in memory."""
    indices = batch_indices(len(images), batch_size, seed)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = indices(step)
        return images[index], labels[index]

    return batch
