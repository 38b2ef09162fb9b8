"""Evaluation metrics: plain ``numpy`` functions and the local ``evaluate`` modules that wrap them.

Each packaged module is a folder ``<name>/<name>.py`` next to this file, loaded by path with :func:`load_metric`:
``evaluate.load("<name>")`` would look the name up on the Hub instead, which fails offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .functional import best_threshold, fold_ids, pair_similarity, reid_metrics, verification_accuracy

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).parent


def available_metrics() -> list[str]:
    """Names of the packaged ``evaluate`` modules: every folder here holding a script of the same name."""
    return sorted(script.parent.name for script in METRICS_DIR.glob("*/*.py") if script.stem == script.parent.name)


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` on the packaged module ``name`` by path (works offline); ``kwargs`` go to ``evaluate.load``."""
    import evaluate  # imported here: slow to import, and only needed to load a module

    script = METRICS_DIR / name / f"{name}.py"
    if not script.is_file():
        raise FileNotFoundError(
            f"No packaged metric {name!r}: {script} does not exist. Available: {available_metrics()}"
        )
    return evaluate.load(str(script), **kwargs)


__all__ = [
    "METRICS_DIR",
    "available_metrics",
    "best_threshold",
    "fold_ids",
    "load_metric",
    "pair_similarity",
    "reid_metrics",
    "verification_accuracy",
]
