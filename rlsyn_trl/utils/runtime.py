"""The process set-up every entry point calls first: fast CPU math, threads, precision, logging, seed.

Library functions never change process-wide state; recipes, the CLI and benchmarks call :func:`setup_runtime`
once, before any tensor work, so the choices are made in one place and logged:

- **Denormal flushing.** Denormal floats made a small DiT's training step about 50x slower on CPUs.
  ``torch.set_flush_denormal`` reaches only threads created after it, so it runs before the thread pool exists.
- **Freed memory is kept.** glibc hands blocks over 32 MB back to the kernel on ``free``, so every operation on a
  large activation (a DiT's feed-forward at batch 64 is 32 MB) page-faults its output in again: an elementwise op
  ran 6x slower than on reused memory. :func:`keep_freed_memory` raises glibc's mmap and trim thresholds.
- **Precision.** ``mixed_precision: auto`` picks bf16 only where the device computes it natively (a CUDA GPU with
  bf16, a CPU with AVX512-BF16 or AMX) and fp32 elsewhere: on an AVX2-only CPU bf16 autocast made a cold-start step
  about 10x slower than fp32. ``RLSYN_TRL_NATIVE_BF16=1`` (or ``0``) overrides the probe, so an AVX2 machine can run
  the path an AVX512-BF16 machine or a GPU takes (slowly), and the other way round.
- **One precision per process.** accelerate keeps one ``AcceleratorState`` per process, and so does this package:
  :func:`setup_runtime` resolves ``auto`` once and keeps the answer; the job and every stage trainer read it
  (:func:`process_precision`, :func:`claim_process_precision` before an accelerator is built), so a stage that asks
  for another precision than the one the process already runs is refused with the fix, not half-built.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from .launch import check_precision, is_main_process, prefer_offline
from .log_filters import silence_torchvision_fallback_notice

logger = logging.getLogger(__name__)

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
NATIVE_BF16_ENV = "RLSYN_TRL_NATIVE_BF16"  # "1" / "0": override the capability probe (tests, CI)


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def forced_native_bf16() -> bool | None:
    """The probe's answer forced by ``RLSYN_TRL_NATIVE_BF16`` (``1``/``true`` or ``0``/``false``), None when unset."""
    value = os.environ.get(NATIVE_BF16_ENV, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"{NATIVE_BF16_ENV} must be 1 or 0 (or unset to probe the device), got {value!r}")


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` (default: CUDA when available, else the CPU) computes bf16 natively."""
    forced = forced_native_bf16()
    if forced is not None:
        return forced
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)
    return False


def resolve_precision(requested: str | None, device: str | torch.device | None = None) -> str:
    """accelerate's ``mixed_precision`` for ``requested``: ``auto`` (or None) -> ``bf16`` where native, else ``no``."""
    requested = "auto" if requested is None else str(requested)
    check_precision(requested)
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device) else "no"


# What ``auto`` resolved to in this process: set by setup_runtime, read by every stage (process_precision).
_auto_precision: str | None = None


def process_precision(requested: str | None = "auto") -> str:
    """The precision a stage of this process runs ``requested`` at: an explicit one as it is; ``auto`` (or None) as
    :func:`setup_runtime` resolved it for this process, read, not probed again.

    So the job, its recognizer rows and each stage's trainer run what the entry point chose and logged. A stage built
    from Python in a process no entry point set up has ``auto`` resolved on its first use, once, the same way.
    """
    global _auto_precision
    if requested is not None and str(requested) != "auto":
        return resolve_precision(requested)  # checked, never changed
    if _auto_precision is None:
        _auto_precision = resolve_precision("auto")
    return _auto_precision


def claim_process_precision(mixed_precision: str | None) -> str:
    """The precision of ``mixed_precision`` in this process (:func:`process_precision`), checked against the one
    this process already runs under, if any.

    accelerate's ``AcceleratorState`` is one per process and cannot change precision once built; a second stage
    asking for another one would fail inside accelerate with a message about restarting the runtime. Here the
    conflict is named with both values and the fix, before any model is touched. Returns the resolved precision.
    """
    from accelerate.state import AcceleratorState

    precision = process_precision(mixed_precision)
    running = AcceleratorState._shared_state.get("_mixed_precision")
    if running is not None and running != precision:
        raise ValueError(
            f"mixed_precision={mixed_precision!r} resolves to {precision!r}, but this process already runs under "
            f"{running!r} (an earlier stage or Accelerator built accelerate's state). One process runs one precision: "
            f"pass --mixed_precision {running} (or auto, which resolves the same way in every stage of a process), "
            "or run this stage in its own process (`accelerate launch` or `rlsyn-trl <stage>`)."
        )
    return precision


KEEP_FREED_BYTES = 1 << 30  # blocks up to 1 GiB come from (and return to) the heap
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@cache
def keep_freed_memory() -> bool:
    """Ask glibc to serve blocks up to 1 GiB from its heap and not to trim it: freed activations are reused.

    The process keeps its peak memory instead of returning it (the price). Returns whether it applied: not on
    other C libraries or operating systems, where the call is skipped.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


@dataclass(frozen=True)
class Runtime:
    """What :func:`setup_runtime` chose, for logs and summaries."""

    device: str
    mixed_precision: str
    threads: int
    cpu_capability: str
    keeps_freed_memory: bool = False


def setup_runtime(
    seed: int | None = None,
    mixed_precision: str | None = "auto",
    threads: int | None = None,
    log_level: int | str = logging.INFO,
    offline: bool = False,
) -> Runtime:
    """Prepare this process for a stage: denormals, threads, logging, seed; returns the resolved precision.

    The one place ``mixed_precision: auto`` is resolved: what it resolves to is kept for the process, and the job and
    the stage trainers read it (:func:`process_precision`).

    ``offline`` sets ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` unless the user set them (the embedded job); both
    libraries read them when first imported, so call this before importing them.
    """
    global _auto_precision
    torch.set_flush_denormal(True)  # first: threads created later inherit it
    silence_torchvision_fallback_notice()  # already done on `import rlsyn_trl`; idempotent
    if threads:
        torch.set_num_threads(threads)
    if offline:
        prefer_offline()
    if not logging.getLogger().handlers:
        # One voice per job: the other processes of a data-parallel group log warnings and errors only.
        level = log_level if is_main_process() else logging.WARNING
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    keeps_freed_memory = device == "cpu" and keep_freed_memory()
    precision = resolve_precision(mixed_precision, device)
    if mixed_precision in (None, "auto"):
        _auto_precision = precision
    if device == "cuda":
        # TF32 tensor cores for the generator's and recognizers' matrix products (10-bit mantissa: below the noise
        # of diffusion training); the memorisation audit switches it off around its distance products.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    runtime = Runtime(
        device, precision, torch.get_num_threads(), torch.backends.cpu.get_cpu_capability(), keeps_freed_memory
    )
    why = ""
    if mixed_precision in (None, "auto"):
        found = "found" if precision == "bf16" else "not found"
        forced = f", forced by {NATIVE_BF16_ENV}" if forced_native_bf16() is not None else ""
        why = f" (auto: native bf16 {found}{forced})"
    logger.info(
        "Runtime: %s, %d thread(s), CPU capability %s, mixed precision %s%s%s",
        device,
        runtime.threads,
        runtime.cpu_capability,
        precision,
        why,
        ", freed memory kept for reuse (glibc)" if keeps_freed_memory else "",
    )
    return runtime
