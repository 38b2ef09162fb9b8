"""Class-conditional DiT generators and identity adapters.

Importing this package imports both ``dit`` and ``adapter``, which register their folder loaders with ``loading``:
``IdentityGenerator.from_pretrained`` then opens base folders and adapter folders alike.
"""

from ..utils.model_sources import resolve_pretrained_folder
from . import adapter as _adapter  # noqa: F401  (registers the adapter-folder loader)
from .dit import (
    IdentityGenerator,
    SampleTrajectory,
    build_pixel_dit,
    class_embedders,
    default_scheduler,
    disable_label_dropout,
    zero_init_modulation,
)
from .loading import load_generator
from .reference import ReferenceDraw, ReferenceStart, reference_rng
from .sampling import DDIMSample, classifier_free_guidance, ddim_sample, start_step

__all__ = [
    "DDIMSample",
    "IdentityGenerator",
    "ReferenceDraw",
    "ReferenceStart",
    "SampleTrajectory",
    "build_pixel_dit",
    "class_embedders",
    "classifier_free_guidance",
    "ddim_sample",
    "default_scheduler",
    "disable_label_dropout",
    "load_generator",
    "reference_rng",
    "resolve_pretrained_folder",
    "start_step",
    "zero_init_modulation",
]
