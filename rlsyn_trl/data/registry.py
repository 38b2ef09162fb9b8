"""The registry of identity datasets and their one entry point: benchmarks registered by name, the user's own
identity data (a Hub dataset id or a local folder laid out like one, :mod:`.user_data`) through the same functions,
each option checked before anything is listed or read."""

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
from .orl import OrlFaces
from .streaming import StreamedSplit, streamed_splits, streamed_user_splits
from .synthetic_faces import SyntheticFaces
from .user_data import UserIdentities, UserIdentitiesConfig, is_user_dataset, locate_user_dataset

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


# Options only a user's dataset takes: a registered builder has one source and reads its columns itself.
USER_DATA_OPTIONS = ("revision", "image_column", "label_column")


def identity_builder(name: str) -> type[datasets.DatasetBuilder]:
    """The builder of ``name``: a registered benchmark, else :class:`UserIdentities` for a local folder or a Hub
    dataset id; anything else is refused with what is accepted."""
    if name in IDENTITY_BUILDERS:
        return IDENTITY_BUILDERS[name]
    if is_user_dataset(name):
        return UserIdentities
    raise KeyError(
        f"Unknown identity dataset {name!r}: not a registered benchmark ({sorted(IDENTITY_BUILDERS)}), an existing "
        "folder or a Hub dataset id (owner/name)."
    )


def register_identity_builder(name: str, builder: type[datasets.DatasetBuilder]) -> None:
    """Make a builder class available to :func:`load_identity_dataset` under ``name``."""
    IDENTITY_BUILDERS[name] = builder


def load_identity_dataset(
    name: str, config_name: str | None = None, *, data_dir: str | None = None, cache_dir: str | None = None, **options
) -> datasets.DatasetDict:
    """Build (or reuse from cache) an identity dataset and return its ``DatasetDict``.

    ``name`` is a registered benchmark, or a Hub dataset id or local folder (Parquet shards with a card's
    ``configs:``, Arrow files, an ``imagefolder`` tree) whose ``datasets`` config is ``config_name``.
    ``options`` are the builder config's fields, e.g. ``shots=2, seed=0`` for ``orl_faces``/``private``, or the
    stages' ``shots``/``seed``, which builders with fixed splits (the ReID releases) take only as ``shots=None``.
    A user's dataset also takes ``revision``, ``image_column``, ``label_column`` and ``num_identities``
    (:class:`UserIdentities`).
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


def stream_identity_dataset(
    name: str, config_name: str | None = None, *, data_dir: str | None = None, cache_dir: str | None = None, **options
) -> dict[str, StreamedSplit]:
    """The splits :func:`load_identity_dataset` would build, as streams (:mod:`.streaming`): the same images and
    labels, decided from the labels alone, read and decoded as training asks for them; nothing is built or cached."""
    builder_class, checked = _checked_options(name, config_name, options)
    if builder_class is UserIdentities:  # its builder reads the whole source to name its identities: not built
        return streamed_user_splits(UserIdentitiesConfig(**_user_config(name, config_name, data_dir, checked)[0]))
    return streamed_splits(_builder(name, config_name, data_dir, cache_dir, options))


def identity_names(
    name: str, config_name: str | None = None, *, data_dir: str | None = None, cache_dir: str | None = None, **options
) -> list[str]:
    """The identities (``label`` names) of a benchmark's training split, from the builder's info alone: folders
    and file names are listed, no image is read and nothing is built, so a check on them runs in seconds."""
    return list(_builder(name, config_name, data_dir, cache_dir, options).info.features["label"].names)


def check_disjoint_identities(
    public: datasets.Dataset, private: datasets.Dataset, public_name: str, private_name: str
) -> None:
    """Refuse public identity data (the reward's spread, the audit's public pairs) that holds a private identity.

    A registered benchmark keeps its halves apart by construction; a user's dataset with a ``public`` config next to
    its private one may not, and a private person among the public ones would make the reward and the audit treat
    that person's own photos as someone else's. Identities are compared by name, before any image is decoded.
    """
    private_names = private.features["label"].names
    shared = sorted(set(public.features["label"].names) & set(private_names))
    if shared:
        examples = ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else "")
        raise ValueError(
            f"{len(shared)} of the {len(private_names)} identities of {private_name} ({examples}) are also in "
            f"{public_name}: public identity data must hold none of the private people. Remove them from the "
            "public data, or set --public_dataset_config null to use none."
        )


def check_identity_options(name: str, config_name: str | None = None, **options) -> None:
    """Refuse an unknown dataset or config, or a bad split option, at once: nothing is listed, read or built.

    :func:`load_identity_dataset` runs this first; a job can run it before loading any model, so that e.g. ORL
    ``shots=7`` fails in milliseconds with the allowed values rather than after the first stages.
    """
    _checked_options(name, config_name, options)


def _builder(
    name: str, config_name: str | None, data_dir: str | None, cache_dir: str | None, options: dict
) -> datasets.DatasetBuilder:
    """The checked builder, its cache keyed by the contents of ``data_dir`` (:func:`folder_fingerprint`) as well;
    a user's dataset's by the commit its revision resolves to, or its folder's fingerprint."""
    builder_class, options = _checked_options(name, config_name, options)
    if builder_class is UserIdentities:
        config, fingerprint = _user_config(name, config_name, data_dir, options)
        return UserIdentities(cache_dir=cache_dir, hash=fingerprint, **config)
    folder = data_dir is not None and Path(data_dir).expanduser().is_dir()
    fingerprint = {"hash": folder_fingerprint(data_dir)} if folder else {}
    return builder_class(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **fingerprint, **options)


def _user_config(name: str, config_name: str | None, data_dir: str | None, options: dict) -> tuple[dict, str]:
    """A user's dataset's config fields (its folder: the snapshot of a Hub id) and the commit or folder
    fingerprint that keys its cache."""
    if data_dir is not None:
        raise ValueError(
            f"--data_dir {data_dir!r}: {name} is read from its own folder or Hub repo; leave data_dir unset."
        )
    config_name = config_name or None  # `--dataset_config ""` on the command line: the default config
    options = dict(options)
    folder, revision = locate_user_dataset(name, options.pop("revision", None), config_name)
    hub_commit = None if revision.startswith("fingerprint:") else revision
    config = dict(data_dir=str(folder), source=name, source_config=config_name, revision=hub_commit, **options)
    return config, revision.removeprefix("fingerprint:")


def _checked_options(name: str, config_name: str | None, options: dict) -> tuple[type[datasets.DatasetBuilder], dict]:
    builder_class = identity_builder(name)
    if builder_class is UserIdentities:
        UserIdentities.check_options(None, source=name, source_config=config_name, **options)
        return builder_class, options
    refused = sorted(key for key in USER_DATA_OPTIONS if options.get(key) is not None)
    if refused:
        raise ValueError(
            f"{name} is a registered benchmark: it takes no {', '.join(refused)} (those choose a revision and the "
            "columns of a Hub dataset or local folder)."
        )
    options = _builder_options(name, builder_class, {k: v for k, v in options.items() if k not in USER_DATA_OPTIONS})
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
