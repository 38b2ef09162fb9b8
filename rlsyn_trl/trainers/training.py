"""The one optimisation loop every stage shares: progress bar, tracker logging, checkpoints, resume.

Under data parallelism (``accelerate launch`` on N processes) the loop is real data parallelism: each process
draws its own share of the global batch (:func:`sample_batches`), its own noise, timesteps and augmentation (a
per-process seed derived from the run seed, :func:`process_seed`), gradients are averaged by DDP so every process
ends with the same weights, and the time budget is decided together (one process stopping alone would leave the
others waiting in the next all-reduce forever).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, parse_flag_from_env, set_seed
from tqdm.auto import tqdm

from ..utils.io import atomic_write_json, read_json
from ..utils.launch import local_batch_size
from ..utils.log_filters import CHECKPOINT_LOGGERS, quiet_logger

logger = logging.getLogger(__name__)


def _latest_checkpoint(folder: Path) -> Path | None:
    checkpoints = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


SHARDED_SETUPS = {
    "DeepSpeed": (DistributedType.DEEPSPEED, "ACCELERATE_USE_DEEPSPEED"),
    "FSDP": (DistributedType.FSDP, "ACCELERATE_USE_FSDP"),
}


def check_data_parallel(state=None) -> None:
    """Refuse DeepSpeed and FSDP launches, before any work: the generator stages run plain DDP.

    They train only identity embedders and LoRA weights on a frozen DiT: a DiT-XL/2 (675M parameters) in bf16 plus
    fp32 optimizer state for a few million trainable weights fits on one GPU, so sharding saves nothing there, while
    it would break what these stages rely on (whole weights for LoRA merging and the deep-copied KL reference,
    accelerate's ``prepare`` without a dataloader).
    """
    kind = getattr(state, "distributed_type", None)
    for name, (distributed_type, flag) in SHARDED_SETUPS.items():
        if kind == distributed_type or parse_flag_from_env(flag):
            raise ValueError(
                f"This stage runs data parallel (DDP) only, not {name}: the frozen DiT and its few trainable weights "
                "fit on one GPU, so sharding saves nothing. Launch with "
                "`accelerate launch --config_file recipes/accelerate_configs/ddp.yaml` (or --multi_gpu)."
            )


def process_seed(seed: int, process_index: int) -> int:
    """This process's random seed: the run seed itself on process 0 (a 1-process run is unchanged), a distinct one on
    every other process, so that processes draw different noise, timesteps, label drops and augmentations."""
    return (seed + 1_000_003 * process_index) % 2**32


class TrainingDiverged(FloatingPointError):
    """A loss, weight or sample became NaN or infinite: the stage stops before writing it as a result."""


def check_finite(accelerator: Accelerator, value: float, what: str, advice: str) -> None:
    """Raise :class:`TrainingDiverged` on every process when ``value`` is not finite on ANY process (so none waits
    forever for another in its next collective)."""
    diverged = not math.isfinite(value)
    if accelerator.num_processes > 1:
        flag = torch.tensor([diverged], dtype=torch.float32, device=accelerator.device)
        diverged = bool(accelerator.reduce(flag, "sum").item() > 0)
    if diverged:
        raise TrainingDiverged(f"{what} is not finite (NaN or infinite): training diverged. {advice}")


def saved_activation_bytes(loss: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of ``loss()``: what a step holds in memory."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss()  # the graph is dropped at once: nothing is kept
    return sum(storages.values())


def available_memory(device: torch.device) -> int:
    """Bytes free for a step: the GPU's free memory, or the host's available RAM (shared by a CPU launch)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def check_batch_memory(
    accelerator: Accelerator, loss_of: Callable[[int], torch.Tensor], batch_size: int, setting: str = "batch_size"
) -> None:
    """Refuse a global batch whose activations cannot fit, before the first step, naming the largest that does.

    ``loss_of(n)`` is the training loss on ``n`` samples. Two probes (1 and 2 samples) give the bytes a sample adds;
    a CPU launch's processes share the host's memory, so there it is the global batch that must fit. The decision
    is taken by all processes together (one refusing alone would leave the others waiting).
    """
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the probes leave the random streams as they were
        one, two = saved_activation_bytes(lambda: loss_of(1)), saved_activation_bytes(lambda: loss_of(2))
    per_sample = max(two - one, 1)
    on_gpu = accelerator.device.type == "cuda"
    samples = batch_size // accelerator.num_processes if on_gpu else batch_size
    usable = 0.8 * available_memory(accelerator.device)
    too_big = per_sample * samples > usable
    if accelerator.num_processes > 1:
        flag = torch.tensor([too_big], dtype=torch.float32, device=accelerator.device)
        too_big = bool(accelerator.reduce(flag, "sum").item() > 0)
    if too_big:
        fits = max(1, int(usable // per_sample)) * (accelerator.num_processes if on_gpu else 1)
        fits -= fits % accelerator.num_processes
        raise ValueError(
            f"--{setting} {batch_size}: a training step would hold about {per_sample * samples / 2**30:.1f} GiB of "
            f"activations ({per_sample / 2**20:.2f} MiB a sample), more than the {usable / 2**30:.1f} GiB usable "
            f"on {accelerator.device} (80% of what is free). Use --{setting} {max(fits, accelerator.num_processes)} "
            "or less."
        )


RUN_RECORD = "run.json"


def run_record(config, resumable: set[str], **extra) -> dict:
    """What a run's checkpoints depend on: every setting of ``config`` but the ``resumable`` ones (step counts,
    budgets, logging, output), plus ``extra`` (e.g. the training images' fingerprints), as JSON values."""
    import dataclasses
    import json

    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in resumable}
    return json.loads(json.dumps({**values, **extra}, default=str, sort_keys=True))


def check_resume(saved: dict | None, current: dict, checkpoint: Path | str) -> None:
    """Refuse to continue ``checkpoint`` under settings other than those of the run that wrote it.

    A resume that mixed them gave a model trained on one split (or from one adapter) whose provenance named
    another. Checkpoints without a record (written before records existed) are accepted as they are.
    """
    if saved is None:
        return
    changed = [key for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    if changed:
        shown = "; ".join(
            f"{key}: {_short(saved.get(key))} there, {_short(current.get(key))} now" for key in changed[:5]
        )
        raise ValueError(
            f"Cannot resume from {checkpoint}: it was written by a run with other settings ({shown}"
            f"{'; ...' if len(changed) > 5 else ''}). Resume with that run's settings, or start afresh in another "
            "--output_dir."
        )


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(value) if hasattr(value, '__len__') else ''} items)"


def require_finite(values: dict, model: torch.nn.Module, what: str, advice: str) -> None:
    """Raise :class:`TrainingDiverged` naming the logged values and trainable weights of ``model`` that are not finite.

    For values every process shares (gathered or reduced logs, weights kept equal by DDP), so all raise together.
    """
    bad = [key for key, value in values.items() if isinstance(value, float) and not math.isfinite(value)]
    weights = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad or weights:
        listed = ", ".join(bad[:4] + [f"{len(weights)} trainable tensor(s) such as {weights[0]}"] * bool(weights))
        raise TrainingDiverged(f"{what}: {listed} not finite (NaN or infinite): training diverged. {advice}")


def require_working_samples(broken: torch.Tensor, what: str, advice: str) -> None:
    """Raise :class:`TrainingDiverged` when any sample is flagged by ``broken_samples`` (``broken``: one flag per
    sample, the same on every process, e.g. gathered), so all processes stop together."""
    if bool(broken.any()):
        raise TrainingDiverged(
            f"{what}: {int(broken.sum())} of {len(broken)} samples are non-finite or one flat colour: training "
            f"diverged. {advice}"
        )


def budget_spent(accelerator: Accelerator, started: float, max_minutes: float | None) -> bool:
    """Whether ``max_minutes`` since ``started`` have passed on ANY process (every process gets the same answer)."""
    if max_minutes is None:
        return False
    spent = time.time() - started > max_minutes * 60
    if accelerator.num_processes > 1:
        flag = torch.tensor([spent], dtype=torch.float32, device=accelerator.device)
        spent = bool(accelerator.reduce(flag, "sum").item() > 0)
    return spent


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
    seed: int | None = None,
    record: dict | None = None,
) -> int:
    """A plain optimisation loop with a progress bar, tracker logging, periodic checkpoints and resume.

    ``record`` (:func:`run_record`) is written beside every checkpoint, and a resume from a checkpoint whose
    record differs is refused (:func:`check_resume`).

    Returns the number of steps done. ``loss_fn(step)`` draws its own batch and returns a scalar loss. With ``seed``
    each process reseeds its random streams with :func:`process_seed` first (a resumed run then restores the
    checkpoint's per-process streams). ``max_minutes`` is checked on every process and acted on by all together.
    """
    if seed is not None:
        set_seed(process_seed(seed, accelerator.process_index))
    start_step = 0
    latest = _latest_checkpoint(checkpoint_dir) if resume else None
    if latest is not None:
        if record is not None:
            saved = latest / RUN_RECORD
            check_resume(
                read_json(saved, "the settings of a checkpoint's run") if saved.is_file() else None, record, latest
            )
        with quiet_logger(*CHECKPOINT_LOGGERS):
            accelerator.load_state(str(latest))
        start_step = int(latest.name.split("-")[1])
        logger.info("Resumed %s from %s", name, latest)
    started = time.time()
    progress = tqdm(range(start_step, steps), desc=name, disable=not accelerator.is_local_main_process)
    done = start_step  # a resumed run that had finished does no step
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
        value, lr = loss.item(), lr_scheduler.get_last_lr()[0]
        last = _latest_checkpoint(checkpoint_dir)
        kept = f"; {last} holds the weights before it" if last is not None else ""
        advice = f"Lower the learning rate (it was {lr:.3g} at this step){kept}. Nothing was saved as the result."
        check_finite(accelerator, value, f"The {name} loss at step {step + 1}", advice)
        progress.set_postfix(loss=f"{value:.4f}")
        accelerator.log({f"{name}/loss": value, f"{name}/lr": lr}, step=step)
        done = step + 1
        timed_out = budget_spent(accelerator, started, max_minutes)
        if done % checkpoint_every == 0 or done == steps or timed_out:
            with quiet_logger(*CHECKPOINT_LOGGERS):
                accelerator.save_state(str(checkpoint_dir / f"step-{done}"))
            if accelerator.is_main_process and record is not None:
                atomic_write_json(checkpoint_dir / f"step-{done}" / RUN_RECORD, record)
            if accelerator.is_main_process:
                for old in sorted(checkpoint_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-2]:
                    shutil.rmtree(old, ignore_errors=True)
            accelerator.wait_for_everyone()
        if timed_out:
            logger.warning("%s stopped by its time budget (%.1f min) at step %d of %d", name, max_minutes, done, steps)
            return done
    return done


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to 10% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # step -> (images, labels)


def batch_indices(
    num_items: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
    setting: str = "batch_size",
) -> Callable[[int], torch.Tensor]:
    """A reproducible mini-batch schedule of item indices: ``indices(step)`` depends only on (seed, step, process).

    So a resumed run sees exactly the batches an uninterrupted one would. Each pass is a permutation of the
    items; with fewer items than ``batch_size`` (few-shot splits) several permutations fill one batch.
    ``batch_size`` is the GLOBAL batch: process ``p`` of ``N`` gets the p-th of its N equal slices, so the processes
    see different items and together exactly the batch one process would see (``setting`` names the option in the
    error raised when N does not divide it).
    """
    if num_items == 0:
        raise ValueError("Cannot draw batches from an empty training set.")
    local = local_batch_size(batch_size, num_processes, setting)
    passes = -(-batch_size // num_items)
    per_epoch = passes * num_items // batch_size

    def indices(step: int) -> torch.Tensor:
        epoch, position = divmod(step, per_epoch)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.cat([torch.randperm(num_items, generator=generator) for _ in range(passes)])
        index = order[position * batch_size : (position + 1) * batch_size]
        return index[process_index * local : (process_index + 1) * local]

    return indices


def sample_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
    setting: str = "batch_size",
) -> Batches:
    """``batch(step)``: this process's images and labels of :func:`batch_indices`' step ``step``, from tensors."""
    indices = batch_indices(len(images), batch_size, seed, process_index, num_processes, setting)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = indices(step)
        return images[index], labels[index]

    return batch
