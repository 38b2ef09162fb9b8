"""Refusals printed as what they are: the message that names the setting and the fix, without a traceback.

The command line and every recipe script end through :func:`run_reporting_refusals`. It lives apart from the
command line because the recipes use it and the command line runs the recipes.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

DEBUG_ENV = "RLSYN_TRL_DEBUG"
# What this package raises to refuse a setting or an input (SettingsError and ProvenanceError are ValueErrors), or
# to stop a diverged training (TrainingDiverged is a FloatingPointError).
REFUSALS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, FileExistsError, ArithmeticError)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def raised_by_package(error: BaseException) -> bool:
    """Whether ``error`` was raised by this package's own code (its last traceback frame is in it)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE_DIR)


def run_reporting_refusals(command: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """``command(argv)``, with the package's refusals printed as their message alone, and exit status 1.

    A refusal names the setting and the fix; the 30 lines of traceback before it hid that line. ``--debug`` (taken
    out of ``argv``) or ``RLSYN_TRL_DEBUG=1`` shows the traceback; errors raised outside the package always do.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        status = command(argv)  # a recipe's cli returns its summary: success
        return status if isinstance(status, int) else 0
    except REFUSALS as error:
        if debug or not raised_by_package(error):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{type(error).__name__}: {message}", file=sys.stderr)
        print(f"(the traceback: add --debug or set {DEBUG_ENV}=1)", file=sys.stderr)
        return 1
