"""Library log noise silenced at the source: one notice every run printed, and loggers quieted for one call.

Without torchvision, transformers' lazy module answers an import of ``CLIPImageProcessor`` or
``SiglipImageProcessor`` with the PIL variant and logs, once per class, "`CLIPImageProcessor` requires torchvision
(not installed); falling back to `CLIPImageProcessorPil` ..." (``transformers.utils.import_utils``). diffusers
imports both classes when its Stable Diffusion pipeline and IP-adapter loaders are imported (TRL's DDPO imports
them); this package uses neither image processor, so the notice says nothing about a run. The filter drops only
records of that logger whose message is that notice: every other transformers warning still shows.
"""

from __future__ import annotations

import contextlib
import logging

TORCHVISION_FALLBACK_LOGGER = "transformers.utils.import_utils"
TORCHVISION_FALLBACK_NOTICE = "requires torchvision (not installed); falling back to"


class TorchvisionFallbackFilter(logging.Filter):
    """Drops transformers' "requires torchvision (not installed); falling back to ...Pil" notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_FALLBACK_NOTICE not in record.getMessage()


def silence_torchvision_fallback_notice() -> None:
    """Install :class:`TorchvisionFallbackFilter` on transformers' import logger (once; importing nothing).

    ``logging.getLogger`` creates the logger transformers will use, so this works before transformers is imported,
    which is when it has to run: the notice is logged while diffusers is being imported.
    """
    logger = logging.getLogger(TORCHVISION_FALLBACK_LOGGER)
    if not any(isinstance(existing, TorchvisionFallbackFilter) for existing in logger.filters):
        logger.addFilter(TorchvisionFallbackFilter())


# accelerate's save_state / load_state log five INFO lines per checkpoint (the folder, then each file).
CHECKPOINT_LOGGERS = ("accelerate.accelerator", "accelerate.checkpointing")


@contextlib.contextmanager
def quiet_logger(*names: str):
    """Raise library loggers to WARNING for the duration of a call (their warnings and errors still show)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [library_logger.level for library_logger in loggers]
    for library_logger in loggers:
        library_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for library_logger, level in zip(loggers, levels):
            library_logger.setLevel(level)
