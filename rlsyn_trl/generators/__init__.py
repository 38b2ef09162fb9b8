"""Class-conditional DiT generators and identity adapters."""

from .dit import (
    IdentityGenerator,
    SampleTrajectory,
    build_pixel_dit,
    class_embedders,
    default_scheduler,
    disable_label_dropout,
    resolve_pretrained_folder,
    zero_init_modulation,
)

__all__ = [
    "IdentityGenerator",
    "SampleTrajectory",
    "build_pixel_dit",
    "class_embedders",
    "default_scheduler",
    "disable_label_dropout",
    "resolve_pretrained_folder",
    "zero_init_modulation",
]
