"""Atomic file and folder writes: a file under its final name is always complete.

Every artefact of the chain (adapters, checkpoints' side files, shards, cards, summaries) is written through a
temporary name in the same folder and renamed into place, so a process killed half-way leaves either the old file or
the new one, never half of one. One helper for all of them keeps that promise in one place.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | os.PathLike, value, **dumps_options) -> Path:
    """``value`` as indented JSON (``default=str`` unless given: paths and dtypes become strings)."""
    dumps_options = {"indent": 2, "default": str, **dumps_options}
    return atomic_write_text(path, json.dumps(value, **dumps_options))


def replace_folder(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Swap a freshly written folder into place, so the final name never holds a half-written one."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    return final
