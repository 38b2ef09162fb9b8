"""The checks every setting goes through, and the error that names the flag and the fix.

Free of torch, ``datasets`` and peft: the settings groups (:mod:`rlsyn_trl.settings`) and the job's settings
(:mod:`rlsyn_trl.job.config`) both use them, and the job refuses a bad flag before it imports anything heavy.
"""

from __future__ import annotations

import math
from typing import Any


class SettingsError(ValueError):
    """A setting has a value the run cannot use; the message names the flag and the fix."""


def require(condition: bool, flag: str, value: Any, fix: str) -> None:
    """Raise :class:`SettingsError` naming ``--flag`` and its value unless ``condition`` holds."""
    if not condition:
        raise SettingsError(f"--{flag} {value!r}: {fix}")


def require_positive(config: Any, *names: str, allow_none: bool = False) -> None:
    """Each of ``names`` must be a number > 0 (or None where allowed)."""
    for name in names:
        value = getattr(config, name)
        if value is None and allow_none:
            continue
        require(
            value is not None and value > 0,
            name,
            value,
            "must be > 0" + (" (or null)" if allow_none else "") + ".",
        )


def _numbers(value: Any, flag: str, fix: str) -> list[float]:
    """A number, a string "a,b" or a list -> its numbers, refused with ``fix`` when they do not parse."""
    try:
        if isinstance(value, str):
            return [float(part) for part in value.replace(" ", "").split(",")]
        if isinstance(value, (list, tuple)):
            return [float(part) for part in value]
        return [float(value)]
    except (TypeError, ValueError):
        raise SettingsError(f"--{flag} {value!r}: {fix}") from None


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))


def parse_reference_strength(value: Any, flag: str = "reference_strength") -> tuple[float, float] | None:
    """``None``, a strength ``s`` or a range ``lo,hi`` (a string "0.5,0.8", or a list) -> ``(lo, hi)``.

    A single ``s`` is the range ``(s, s)``. Every bound must lie in (0, 1]: 0 would skip the whole chain and
    return the real photo itself, above 1 there is no earlier step to start from.
    """
    if _unset(value):
        return None
    fix = 'must be a strength in (0, 1] (e.g. 0.6) or a range "lo,hi" / [lo, hi] with 0 < lo <= hi <= 1.'
    parts = _numbers(value, flag, fix)
    require(len(parts) in (1, 2), flag, value, fix)
    low, high = parts[0], parts[-1]
    require(all(math.isfinite(p) and 0 < p <= 1 for p in parts) and low <= high, flag, value, fix)
    return low, high


def parse_guidance_interval(value: Any, flag: str = "guidance_interval") -> tuple[float, float] | None:
    """``None`` or the noise levels ``lo,hi`` (a string "0.5,1", or a list) where guidance applies -> ``(lo, hi)``.

    Levels are ``t / T`` (0: the clean image, 1: pure noise); guidance applies where ``lo < t / T <= hi``, so the
    interval must hold some of (0, 1].
    """
    if _unset(value):
        return None
    fix = 'must be noise levels "lo,hi" / [lo, hi] with 0 <= lo < hi <= 1 (e.g. "0.5,1": the noisier half).'
    parts = _numbers(value, flag, fix)
    require(len(parts) == 2, flag, value, fix)
    low, high = parts
    require(all(math.isfinite(p) for p in parts) and 0 <= low < high <= 1, flag, value, fix)
    return low, high
