"""Process-wide plumbing every layer shares: atomic writes (:mod:`.io`), the process set-up (:mod:`.runtime`), the
data-parallel launch (:mod:`.launch`), trackers (:mod:`.tracking`), library log filters (:mod:`.log_filters`), where
models come from (:mod:`.model_sources`) and image grids and curves (:mod:`.visualization`).

Nothing here knows the method: these modules import no other part of the package.
"""
