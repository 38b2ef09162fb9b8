"""The end-to-end job (``rlsyn-trl run-all``): every stage through the recipes' entry points on the embedded default
(:mod:`.pipeline`), then the recognizer rows, the results table and the summary (:mod:`.comparison`). It sits above
the recipes: nothing below imports it."""

from .pipeline import MainJobConfig, run_main_job

__all__ = ["MainJobConfig", "run_main_job"]
