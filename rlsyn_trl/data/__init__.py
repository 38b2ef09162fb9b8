"""Identity benchmarks as ``datasets`` builders, registered by name, and the shared preprocessing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets
from datasets.exceptions import DatasetGenerationError

from ._folders import folder_fingerprint
from ._options import CheckedBuilder
from .casia_webface import CasiaWebFace
from .cuhk03 import Cuhk03Np
from .face_verification import FaceVerification, Rfw
from .market1501 import Market1501
from .orl import OrlFaces, find_orl_root, private_split
from .preprocessing import dataset_to_tensors, preprocess_images, tensor_to_pil, to_model_range, to_unit_range
from .synthetic_faces import SyntheticFaces

IDENTITY_BUILDERS: dict[str, type[datasets.DatasetBuilder]] = {
    "orl_faces": OrlFaces,
    "market1501": Market1501,
    "cuhk03_np": Cuhk03Np,
    "casia_webface": CasiaWebFace,
    "face_verification": FaceVerification,
    "rfw": Rfw,
    "synthetic_faces": SyntheticFaces,
}


# The stages (cold start, DDPO, generation, recognizer) pass every benchmark ORL's split options: ``shots`` (real
# training images per identity) and ``seed``. A builder that calls them otherwise maps them here.
SPLIT_OPTION_NAMES: dict[str, dict[str, str]] = {"casia_webface": {"shots": "images_per_identity"}}


def register_identity_builder(name: str, builder: type[datasets.DatasetBuilder]) -> None:
    """Make a builder class available to :func:`load_identity_dataset` under ``name``."""
    IDENTITY_BUILDERS[name] = builder


def load_identity_dataset(
    name: str, config_name: str | None = None, *, data_dir: str | None = None, cache_dir: str | None = None, **options
) -> datasets.DatasetDict:
    """Build (or reuse from cache) a registered identity benchmark and return its ``DatasetDict``.

    ``options`` are the builder config's fields, e.g. ``shots=2, seed=0`` for ``orl_faces``/``private``, or the
    stages' ``shots``/``seed``, which builders with fixed splits (the ReID releases) take only as ``shots=None``.
    """
    builder = _builder(name, config_name, data_dir, cache_dir, options)
    try:
        builder.download_and_prepare()
    except DatasetGenerationError as error:
        # datasets wraps the builder's own message (which names the bad file) in a generic one: surface it.
        cause = error.__cause__
        if isinstance(cause, (OSError, ValueError, KeyError)):
            raise cause from error
        raise
    return builder.as_dataset()


def identity_names(
    name: str, config_name: str | None = None, *, data_dir: str | None = None, cache_dir: str | None = None, **options
) -> list[str]:
    """The identities (``label`` names) of a benchmark's training split, from the builder's info alone: folders
    and file names are listed, no image is read and nothing is built, so a check on them runs in seconds."""
    return list(_builder(name, config_name, data_dir, cache_dir, options).info.features["label"].names)


def check_identity_options(name: str, config_name: str | None = None, **options) -> None:
    """Refuse an unknown dataset or config, or a bad split option, at once: nothing is listed, read or built.

    :func:`load_identity_dataset` runs this first; a job can run it before loading any model, so that e.g. ORL
    ``shots=7`` fails in milliseconds with the allowed values rather than after the first stages.
    """
    _checked_options(name, config_name, options)


def _builder(
    name: str, config_name: str | None, data_dir: str | None, cache_dir: str | None, options: dict
) -> datasets.DatasetBuilder:
    """The checked builder, its cache keyed by the contents of ``data_dir`` (:func:`folder_fingerprint`) as well."""
    builder_class, options = _checked_options(name, config_name, options)
    folder = data_dir is not None and Path(data_dir).expanduser().is_dir()
    fingerprint = {"hash": folder_fingerprint(data_dir)} if folder else {}
    return builder_class(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **fingerprint, **options)


def _checked_options(name: str, config_name: str | None, options: dict) -> tuple[type[datasets.DatasetBuilder], dict]:
    if name not in IDENTITY_BUILDERS:
        raise KeyError(f"Unknown identity dataset {name!r}; registered: {sorted(IDENTITY_BUILDERS)}")
    builder_class = IDENTITY_BUILDERS[name]
    options = _builder_options(name, builder_class, options)
    if issubclass(builder_class, CheckedBuilder):
        builder_class.check_options(config_name, **options)
    return builder_class, options


def _builder_options(name: str, builder: type[datasets.DatasetBuilder], options: dict) -> dict:
    """``options`` in the builder's own terms; split options it has no field for are dropped when they ask for
    nothing (``shots=None``, any ``seed``) and refused otherwise."""
    names = SPLIT_OPTION_NAMES.get(name, {})
    options = {names.get(key, key): value for key, value in options.items()}
    fields = {field.name for field in dataclasses.fields(builder.BUILDER_CONFIG_CLASS)}
    if options.get("shots") is not None and "shots" not in fields:
        raise ValueError(
            f"{name} has fixed training splits: it takes no `shots` (got {options['shots']}). Set shots to null "
            "to train on every training image."
        )
    return {key: value for key, value in options.items() if key in fields or key not in ("shots", "seed")}


__all__ = [
    "IDENTITY_BUILDERS",
    "CasiaWebFace",
    "Cuhk03Np",
    "FaceVerification",
    "Market1501",
    "OrlFaces",
    "Rfw",
    "SyntheticFaces",
    "identity_names",
    "check_identity_options",
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
