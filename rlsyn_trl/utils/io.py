"""Atomic file and folder writes: a file under its final name is always complete; reads that name a bad file.

Every artefact of the chain (adapters, checkpoints' side files, shards, cards, summaries) is written through a
temporary name in the same folder and renamed into place, so a process killed half-way leaves either the old file or
the new one, never half of one. One helper for all of them keeps that promise in one place. A file damaged
elsewhere (a truncated copy, a hand edit) is read through :func:`read_json` / :func:`read_safetensors`, which name
the file and what it should hold instead of a bare parser error.
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


class DamagedFileError(ValueError):
    """A file the chain wrote (or expects) cannot be parsed: the message names it and what it should hold."""


def read_json(path: str | os.PathLike, what: str):
    """The JSON value in ``path``; :class:`DamagedFileError` naming the file and ``what`` it holds when it is not."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedFileError(
            f"{path} should hold {what} but is not valid JSON ({error}): it is damaged or was not written by "
            "rlsyn-trl. Write it again (rerun the stage that made it) or restore a good copy."
        ) from error


def read_safetensors(path: str | os.PathLike, what: str) -> dict:
    """The tensors in ``path``; :class:`DamagedFileError` naming the file and ``what`` it holds when unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise DamagedFileError(
            f"{path} should hold {what} but cannot be read as safetensors ({error}): it is truncated or damaged. "
            "Copy the folder again, or rerun the stage that wrote it."
        ) from error
