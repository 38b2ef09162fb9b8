"""Moved to :mod:`rlsyn_trl.utils.runtime`; this alias stays for one release (``rlsyn_trl.setup_runtime`` too)."""

from .utils.launch import PRECISIONS  # noqa: F401
from .utils.runtime import (  # noqa: F401
    NATIVE_BF16_ENV,
    Runtime,
    claim_process_precision,
    keep_freed_memory,
    native_bf16,
    resolve_precision,
    setup_runtime,
)
