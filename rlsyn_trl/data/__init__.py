"""Identity benchmarks as ``datasets`` builders, registered by name, and the shared preprocessing."""

from __future__ import annotations

import datasets
from datasets.exceptions import DatasetGenerationError

from .casia_webface import CasiaWebFace
from .cuhk03 import Cuhk03Np
from .face_verification import FaceVerification, Rfw
from .market1501 import Market1501
from .orl import OrlFaces, find_orl_root, private_split
from .preprocessing import dataset_to_tensors, preprocess_images, tensor_to_pil, to_model_range, to_unit_range

IDENTITY_BUILDERS: dict[str, type[datasets.DatasetBuilder]] = {
    "orl_faces": OrlFaces,
    "market1501": Market1501,
    "cuhk03_np": Cuhk03Np,
    "casia_webface": CasiaWebFace,
    "face_verification": FaceVerification,
    "rfw": Rfw,
}


def register_identity_builder(name: str, builder: type[datasets.DatasetBuilder]) -> None:
    """Make a builder class available to :func:`load_identity_dataset` under ``name``."""
    IDENTITY_BUILDERS[name] = builder


def load_identity_dataset(
    name: str, config_name: str | None = None, *, data_dir: str | None = None, cache_dir: str | None = None, **options
) -> datasets.DatasetDict:
    """Build (or reuse from cache) a registered identity benchmark and return its ``DatasetDict``.

    ``options`` are the builder config's fields, e.g. ``shots=2, seed=0`` for ``orl_faces``/``private``.
    """
    if name not in IDENTITY_BUILDERS:
        raise KeyError(f"Unknown identity dataset {name!r}; registered: {sorted(IDENTITY_BUILDERS)}")
    builder = IDENTITY_BUILDERS[name](config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **options)
    try:
        builder.download_and_prepare()
    except DatasetGenerationError as error:
        # datasets wraps the builder's own message (which names the bad file) in a generic one: surface it.
        cause = error.__cause__
        if isinstance(cause, (OSError, ValueError, KeyError)):
            raise cause from error
        raise
    return builder.as_dataset()


__all__ = [
    "IDENTITY_BUILDERS",
    "CasiaWebFace",
    "Cuhk03Np",
    "FaceVerification",
    "Market1501",
    "OrlFaces",
    "Rfw",
    "dataset_to_tensors",
    "find_orl_root",
    "load_identity_dataset",
    "preprocess_images",
    "private_split",
    "register_identity_builder",
    "tensor_to_pil",
    "to_model_range",
    "to_unit_range",
]
