"""One loader from a path or Hub id to an :class:`~rlsyn_trl.generators.IdentityGenerator`.

:func:`load_generator` resolves the name (``rlsyn_trl.utils.model_sources``), looks at what kind of folder it got
(a base DiT folder or an identity adapter) and hands it to that kind's loader. The loaders register themselves here
(``dit.py`` the base one, ``adapter.py`` the adapter one) instead of being imported by this module: the adapter
loader builds on ``dit.py`` and ``IdentityGenerator.from_pretrained`` in ``dit.py`` delegates here, so importing them
from here would make a cycle. ``rlsyn_trl.generators`` imports both modules, so both loaders are in place whenever
anything of the package is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..utils.model_sources import generator_folder_kind, resolve_pretrained_folder

FolderLoader = Callable[[Path, "torch.dtype | None", str], Any]
_LOADERS: dict[str, FolderLoader] = {}


def register_folder_loader(kind: str, loader: FolderLoader) -> None:
    """``loader(folder, torch_dtype, source)`` builds a generator from a resolved folder of this kind."""
    _LOADERS[kind] = loader


def load_generator(
    path_or_id: str | os.PathLike, revision: str | None = None, torch_dtype: torch.dtype | None = None
) -> Any:
    """A base generator or an identity adapter (rebuilt on its own base model), from a folder, Hub id or embedded id."""
    folder = resolve_pretrained_folder(path_or_id, revision)
    kind = generator_folder_kind(folder)
    if kind not in _LOADERS:
        raise RuntimeError(f"No loader for {kind} folders is registered: import rlsyn_trl.generators first.")
    return _LOADERS[kind](folder, torch_dtype, str(path_or_id))
