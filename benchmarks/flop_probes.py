"""FLOPs and times of the package's model calls while a recipe stage runs in this process (``gpu_smoke.py``).

:class:`StageProbe` wraps the calls every stage makes its compute through, for the duration of one stage:

- the DiT's forward, ``IdentityGenerator.model_output`` (every sampler step, DDPO's reference and training passes
  and the denoising loss go through it), split into calls without gradient (``dit_forward``: sampling) and with it
  (``dit_forward_grad``: training);
- the VAE, ``IdentityGenerator.encode`` / ``decode``; phi, ``IdentityFeatureExtractor.embed`` (flip included);
- the recognizer's selection round, ``DynamicSampleSelectionCallback.selection_round``;
- one optimizer step of each trainer (``train_step``): the window from the step's first loss call
  (``ColdStartTrainer.loss``, ``RLSynDDPOTrainer._loss_terms``, ``RecognizerTrainer.compute_loss`` in training
  mode) to the optimizer step itself, so that it holds the forward AND the backward pass.

The FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions and attention;
CPU attention added below, which torch's table lacks) on the FIRST call of each kind and the FIRST optimizer step
only; every later call is timed without a counter, so the times are clean and the first (warm-up) call is never
timed. The counts are the operations the real code ran, at the run's batch shapes, not estimates: FLOPs per row
(image or latent) are what the projections to the YAMLs' batch sizes scale (matrix products and convolutions are
linear in the batch).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.utils.flop_counter as flop_counter
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.flop_counter import FlopCounterMode

from rlsyn_trl.encoders.feature_extractor import IdentityFeatureExtractor
from rlsyn_trl.generators import IdentityGenerator
from rlsyn_trl.recognizer.selection import DynamicSampleSelectionCallback
from rlsyn_trl.recognizer.trainer import RecognizerTrainer
from rlsyn_trl.trainers.cold_start import ColdStartTrainer
from rlsyn_trl.trainers.ddpo import RLSynDDPOTrainer

ATEN = torch.ops.aten


def _cpu_attention(query, key, value, *_, **__) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *_, **__) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# On a CPU, scaled_dot_product_attention runs these kernels, absent from torch's FLOP table (2.13): without them a
# DiT's attention would count as 0 (6% of DiT-XL/2's FLOPs at 256 tokens).
CPU_ATTENTION = {
    ATEN._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    ATEN._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class UnitRecord:
    """One kind of call: how many, how many rows in all, the FLOPs of the first call and the later calls' times."""

    calls: int = 0
    rows: int = 0
    row_shape: tuple | None = None
    counted_flops: int | None = None
    counted_rows: int = 0
    seconds_per_row: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "calls": self.calls,
            "rows": self.rows,
            "row_shape": list(self.row_shape or ()),
            "flops_per_row": self.counted_flops / self.counted_rows if self.counted_rows else None,
            "s_per_row": statistics.median(self.seconds_per_row) if self.seconds_per_row else None,
        }


@dataclass
class Window:
    """The first optimizer step: its loss call's rows, its FLOPs and the rows each unit ran inside it."""

    opener: str
    rows: int
    mode: FlopCounterMode
    rows_before: dict[str, int]
    flops: int | None = None
    unit_rows: dict[str, int] = field(default_factory=dict)


def _rows(tensor: torch.Tensor) -> tuple[int, tuple]:
    return tensor.shape[0], tuple(tensor.shape[1:])


class StageProbe:
    """Patch the model calls listed in the module docstring for one stage (a context manager); :meth:`summary`."""

    def __init__(self) -> None:
        self.units: dict[str, UnitRecord] = defaultdict(UnitRecord)
        self.window: Window | None = None
        self.step: Window | None = None
        self._restore: list[tuple[type, str, Callable]] = []
        self._hook = None

    # -- set-up ---------------------------------------------------------------------------------------------
    def __enter__(self) -> StageProbe:
        def dit(_generator, latents, *_, **__):
            name = "dit_forward_grad" if torch.is_grad_enabled() else "dit_forward"
            return (name, *_rows(latents))

        def selection(callback, *_, **__):
            candidates = min(callback.config.candidates_per_round, len(callback._order))
            return ("selection_round", callback.config.real_per_round + candidates, ())

        self._wrap(IdentityGenerator, "model_output", dit)
        self._wrap(IdentityGenerator, "encode", lambda _, images, *a, **k: ("vae_encode", *_rows(images)))
        self._wrap(IdentityGenerator, "decode", lambda _, latents, *a, **k: ("vae_decode", *_rows(latents)))
        self._wrap(IdentityFeatureExtractor, "embed", lambda _, images, *a, **k: ("phi", *_rows(images)))
        self._wrap(DynamicSampleSelectionCallback, "selection_round", selection)
        config_batch = lambda trainer, *_, **__: trainer.config.batch_size  # noqa: E731 -- one process: the batch
        self._opener(ColdStartTrainer, "loss", config_batch)
        self._opener(RLSynDDPOTrainer, "_loss_terms", lambda _, sample, *a, **k: len(sample["latents"]))
        training = lambda _, model, inputs, *a, **k: len(inputs["pixel_values"]) if model.training else None  # noqa: E731
        self._opener(RecognizerTrainer, "compute_loss", training)
        self._hook = register_optimizer_step_post_hook(self._close_window)
        return self

    def __exit__(self, *_) -> None:
        self._hook.remove()
        if self.window is not None:  # a stage that failed inside its first step
            self.window.mode.__exit__(None, None, None)
            self.window = None
        for owner, attribute, original in reversed(self._restore):
            setattr(owner, attribute, original)
        self._restore.clear()

    def _patch(self, owner: type, attribute: str, wrapper: Callable) -> None:
        original = owner.__dict__[attribute]
        self._restore.append((owner, attribute, original))
        setattr(owner, attribute, functools.wraps(original)(wrapper(original)))

    def _wrap(self, owner: type, attribute: str, describe: Callable) -> None:
        """Count and time ``owner.attribute``; ``describe(*args)`` gives (unit name, rows, shape of one row)."""

        def wrapper(original: Callable) -> Callable:
            def call(*args, **kwargs):
                name, rows, shape = describe(*args, **kwargs)
                return self._call(name, rows, shape, original, args, kwargs)

            return call

        self._patch(owner, attribute, wrapper)

    def _opener(self, owner: type, attribute: str, rows: Callable) -> None:
        """``owner.attribute`` starts an optimizer step: the first one's FLOPs are counted up to the step."""

        def wrapper(original: Callable) -> Callable:
            def call(*args, **kwargs):
                count = rows(*args, **kwargs)
                if count is not None and self.step is None and self.window is None:
                    mode = counter()
                    mode.__enter__()
                    before = {name: unit.rows for name, unit in self.units.items()}
                    self.window = Window(f"{owner.__name__}.{attribute}", count, mode, before)
                return original(*args, **kwargs)

            return call

        self._patch(owner, attribute, wrapper)

    # -- counting -------------------------------------------------------------------------------------------
    def _call(self, name: str, rows: int, shape: tuple, original: Callable, args: tuple, kwargs: dict):
        unit = self.units[name if unit_shape_matches(self.units.get(name), shape) else f"{name} {list(shape)}"]
        unit.calls, unit.rows, unit.row_shape = unit.calls + 1, unit.rows + rows, shape
        if unit.counted_flops is None:
            with counter() as mode:
                result = original(*args, **kwargs)
            unit.counted_flops, unit.counted_rows = mode.get_total_flops(), rows
            return result
        _sync()
        started = time.perf_counter()
        result = original(*args, **kwargs)
        _sync()
        if rows:
            unit.seconds_per_row.append((time.perf_counter() - started) / rows)
        return result

    def _close_window(self, *_) -> None:
        window = self.window
        if window is None:
            return
        window.mode.__exit__(None, None, None)
        window.flops = window.mode.get_total_flops()
        window.unit_rows = {
            name: unit.rows - window.rows_before.get(name, 0)
            for name, unit in self.units.items()
            if unit.rows > window.rows_before.get(name, 0)
        }
        self.step, self.window = window, None

    def summary(self) -> dict:
        """``units``: per kind of call; ``train_step``: the first optimizer step (None in a stage without one)."""
        step = None
        if self.step is not None:
            step = {
                "opener": self.step.opener,
                "rows": self.step.rows,
                "flops": self.step.flops,
                "unit_rows": self.step.unit_rows,
            }
        return {"units": {name: unit.summary() for name, unit in self.units.items()}, "train_step": step}


def unit_shape_matches(unit: UnitRecord | None, shape: tuple) -> bool:
    """A kind of call keeps one row shape; a call at another (e.g. another resolution) is a kind of its own."""
    return unit is None or unit.row_shape is None or unit.row_shape == shape
