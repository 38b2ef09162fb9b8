"""The end-to-end job (``rlsyn-trl run-all``): its settings (:mod:`.config`), every stage through the recipes' entry
points on the embedded default (:mod:`.pipeline`), then the recognizer rows, the results table and the summary
(:mod:`.comparison`). It sits above the recipes: nothing below imports it. Names are imported on first use, so the
command line parses the job's settings without loading the stages.
"""

from ..utils.lazy import lazy_attributes

_LAZY = {"MainJobConfig": "config", "run_main_job": "pipeline"}

__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
