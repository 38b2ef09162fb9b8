"""Experiment trackers (``log_with: tensorboard``, ``trackio``, ...) fed a config they accept.

Tensorboard's hparams table takes only int, float, str, bool and tensor values: a nested dict (TRL's DDPO trainer
logs ``{"ddpo_trainer_config": {...}}``), a list (LoRA target modules, encoder widths) or ``None`` makes it raise
at start-up. :func:`scalar_config` flattens a config into such values, and :class:`ScalarConfigTracker` wraps a
named accelerate tracker so that whoever calls ``init_trackers`` (the stock DDPO trainer included) hands it one.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker, filter_trackers, get_available_trackers


def scalar_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """``values`` with nested mappings flattened to ``outer/inner`` keys and every non-scalar value (lists, None,
    paths, enums) written as its string, so any tracker's hparams table accepts it."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(scalar_config(value, f"{name}/"))
        elif isinstance(value, (bool, str)) or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            flat[name] = value if isinstance(value, (bool, str, int, float)) else float(value)
        else:
            flat[name] = str(value)
    return flat


class ScalarConfigTracker(GeneralTracker):
    """An accelerate tracker that forwards everything to ``inner`` but its config, which it flattens first."""

    main_process_only = True
    requires_logging_directory = False

    def __init__(self, inner: GeneralTracker):
        super().__init__(_blank=True)
        self.inner = inner
        self.name = inner.name

    @property
    def tracker(self):
        return self.inner.tracker

    def start(self) -> None:
        self.inner.start()

    def store_init_configuration(self, values: dict) -> None:
        self.inner.store_init_configuration(scalar_config(values))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.inner.log(values, step=step, **kwargs)

    def log_images(self, values: dict, step: int | None = None, **kwargs) -> None:
        if hasattr(self.inner, "log_images"):
            self.inner.log_images(values, step=step, **kwargs)

    def finish(self) -> None:
        self.inner.finish()


def build_trackers(
    log_with: str | Sequence[str | GeneralTracker] | None, project_name: str, logging_dir: str | Path
) -> list[GeneralTracker]:
    """The trackers ``log_with`` names (``tensorboard``, ``trackio``, ``wandb``, ``all``...) wrapped in
    :class:`ScalarConfigTracker`, for ``Accelerator(log_with=...)``; tracker instances pass through unchanged.
    A tracker whose package is missing is refused with the fix; ``logging_dir`` holds the local ones.
    Nothing starts until ``init_trackers``, which runs on the main process only."""
    if log_with is None:
        return []
    names = [log_with] if isinstance(log_with, str) else list(log_with)
    trackers = [tracker for tracker in names if isinstance(tracker, GeneralTracker)]
    named = [tracker for tracker in names if not isinstance(tracker, GeneralTracker)]
    available = {str(kind) for kind in get_available_trackers()}
    missing = [str(name) for name in named if str(name) != "all" and str(name) not in available]
    if missing:  # accelerate would drop them silently, and the run would log nowhere
        raise ValueError(
            f"--log_with {', '.join(missing)}: not installed here (or not a tracker accelerate knows). Install it, "
            f"e.g. `pip install 'rlsyn-trl[{missing[0]}]'` for tensorboard or trackio, or leave --log_with unset "
            "(metrics.jsonl and the PNG grids are written regardless)."
        )
    for kind in filter_trackers(named, str(logging_dir)):
        tracker_class = LOGGER_TYPE_TO_CLASS[str(kind)]
        if tracker_class.requires_logging_directory:
            inner = tracker_class(project_name, str(logging_dir))
        else:
            inner = tracker_class(project_name)
        trackers.append(ScalarConfigTracker(inner))
    return trackers


def end_trackers(accelerator) -> None:
    """Close the stage's trackers and keep the process group.

    ``Accelerator.end_training`` also destroys the process group, which the next stage of a data-parallel
    ``run-all`` (every stage in the same processes) still needs; the group ends with the processes.
    """
    for tracker in accelerator.trackers:
        tracker.finish()
