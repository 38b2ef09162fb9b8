"""Provenance, the contract between the stages: every artefact records what made it, and the next stage checks it.

An artefact (prior, identity adapter, synthetic dataset, recognizer) carries a ``provenance.json``:

- ``stage``: ``prior``, ``cold_start``, ``ddpo``, ``generation`` or ``recognizer``;
- ``data``: the real split it was made from (dataset, config, shots, split seed, identities) and a fingerprint of
  every real TRAINING image (a hash of its stored bytes), so a later stage can tell which photos it has seen;
- the stage's own settings that later stages must agree with (``training`` for the cold start's denoising loss,
  ``reward`` and ``sampler`` for the DDPO policy, ``reward``, ``sampler`` and the audit for a dataset); ``reward``
  is phi and a :class:`~rlsyn_trl.rewards.RewardOptions` (:func:`reward_record`, read back by :func:`read_reward`);
- ``parent``: the input artefact (id, revision) with its own provenance, so the whole chain can be read back.

Stages read what they need from their input artefact instead of asking again (an unset ``shots`` is the adapter's),
refuse a setting that contradicts it, with both values and the fix in the message, and the recognizer refuses a
synthetic dataset whose generator saw any of the recognizer's evaluation images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import datasets

from .rewards.composite import RewardOptions
from .utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
PROVENANCE_FORMAT = "rlsyn-provenance/1"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CONFIG_FILES = (
    "identity_adapter_config.json",
    "adapter_config.json",
    "model_index.json",
    "config.json",
    "scheduler_config.json",
)


class ProvenanceError(ValueError):
    """A setting or an input contradicts what an input artefact records; the message names both and the fix."""


# -- fingerprints -------------------------------------------------------------------------------------------------
def image_fingerprints(split: datasets.Dataset, column: str = "image") -> list[str]:
    """A short hash of each image's stored bytes (undecoded): the same photo gives the same fingerprint. A streamed
    split (:class:`rlsyn_trl.data.StreamedSplit`) hashes the same bytes as it reads them, in the same order."""
    if not isinstance(split, datasets.Dataset):
        return split.fingerprints()
    raw = split.cast_column(column, datasets.Image(decode=False))
    fingerprints = []
    for start in range(0, len(raw), 1000):  # in chunks: a large training set never sits in memory whole
        for image in raw[start : start + 1000][column]:
            data = image.get("bytes")
            if data is None:
                data = Path(image["path"]).read_bytes()
            fingerprints.append(hashlib.sha256(data).hexdigest()[:20])
    return fingerprints


def folder_revision(folder: str | os.PathLike) -> str:
    """The commit of a Hub snapshot, else a content hash of a local folder's weights and configs.

    A local adapter folder is often retrained in place; hashing its files tells the runs apart.
    """
    folder = Path(folder)
    if folder.parent.name == "snapshots":
        return folder.name
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and "checkpoints" not in path.relative_to(folder).parts
        and (path.suffix in WEIGHT_SUFFIXES or path.name in CONFIG_FILES)
    )
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


# -- the real data split -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSplit:
    """A resolved real split: every field decided (from the settings, the input artefact or the defaults)."""

    dataset_name: str
    dataset_config: str | None
    data_dir: str | None
    shots: int | None
    split_seed: int | None
    dataset_revision: str | None = None  # a Hub dataset's commit (resolved by resolve_data_split)
    image_column: str | None = None
    label_column: str | None = None

    def options(self) -> dict[str, int | str]:
        """The builder's split options (``shots``, ``seed``) and a user dataset's revision and columns, when set."""
        options = (
            ("shots", self.shots),
            ("seed", self.split_seed),
            ("revision", self.dataset_revision),
            ("image_column", self.image_column),
            ("label_column", self.label_column),
        )
        return {key: value for key, value in options if value is not None}

    @classmethod
    def from_record(cls, record: Mapping, data_dir: str | None = None) -> DataSplit:
        """The split a provenance ``data`` section names, a Hub dataset at its recorded commit (a folder's recorded
        fingerprint is no revision to load: the training images' fingerprints tell a changed folder)."""
        revision = record.get("dataset_revision")
        return cls(
            record["dataset_name"], record.get("dataset_config"), data_dir, record.get("shots"),
            record.get("split_seed"), None if str(revision).startswith("fingerprint:") else revision,
            record.get("image_column"), record.get("label_column"),
        )  # fmt: skip

    def public(self, dataset_config: str) -> DataSplit:
        """The same source's public identities (every image: no shots or seed), e.g. ORL's ``public`` half, or a
        user's dataset's ``public`` config at the same commit and with the same columns."""
        return dataclasses.replace(self, dataset_config=dataset_config, shots=None, split_seed=None)

    def load_public(self, dataset_config: str, private: datasets.Dataset, cache_dir: str | None = None):
        """The ``train`` split of :meth:`public`, refused when it holds an identity of ``private``."""
        from .data import check_disjoint_identities

        split = self.public(dataset_config)
        public = split.load(cache_dir)["train"]
        check_disjoint_identities(public, private, split.describe(), self.describe())
        return public

    def load(self, cache_dir: str | None = None, streaming: bool = False) -> datasets.DatasetDict:
        """The split's ``DatasetDict``; ``streaming``: its splits as streams
        (:func:`rlsyn_trl.data.stream_identity_dataset`), which :meth:`record` records alike."""
        from .data import load_identity_dataset, stream_identity_dataset

        load = stream_identity_dataset if streaming else load_identity_dataset
        return load(
            self.dataset_name, self.dataset_config, data_dir=self.data_dir, cache_dir=cache_dir, **self.options()
        )

    def describe(self) -> str:
        at = f"@{self.dataset_revision[:12]}" if self.dataset_revision else ""
        return f"{self.dataset_name}{at}/{self.dataset_config} (shots={self.shots}, split_seed={self.split_seed})"

    def record(self, data: datasets.DatasetDict) -> dict:
        """The provenance ``data`` section: this split, its identities and its training images' fingerprints.

        A user's dataset also records its revision: a Hub dataset's commit, a local folder's content fingerprint
        (:func:`rlsyn_trl.data._folders.folder_fingerprint`), and the columns when they were named."""
        from .data import UserIdentities, identity_builder
        from .data._folders import folder_fingerprint
        from .data.user_data import is_local_dataset

        train = data["train"]
        fingerprints = image_fingerprints(train)
        split = {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if key != "data_dir" and (key in RECORDED_KEYS or value is not None)
        }
        if identity_builder(self.dataset_name) is UserIdentities and is_local_dataset(self.dataset_name):
            split["dataset_revision"] = f"fingerprint:{folder_fingerprint(self.dataset_name)}"
        return {
            **split,
            "identities": list(train.features["label"].names),
            "num_train_images": len(train),
            "train_images": fingerprints,
            "fingerprint": hashlib.sha256("".join(sorted(fingerprints)).encode()).hexdigest()[:20],
        }


RECORDED_KEYS = ("dataset_name", "dataset_config", "shots", "split_seed")  # in every record, even when None
SPLIT_KEYS = (*RECORDED_KEYS, "image_column", "label_column")
DEFAULT_DATASET = "orl_faces"


def _dataset_defaults(name: str) -> dict[str, Any]:
    """The builder's own defaults for a split: its default config, and its shots / seed fields' defaults."""
    from .data import SPLIT_OPTION_NAMES, identity_builder

    builder = identity_builder(name)
    fields = {f.name: f.default for f in dataclasses.fields(builder.BUILDER_CONFIG_CLASS)}
    names = SPLIT_OPTION_NAMES.get(name, {})
    shots = fields.get(names.get("shots", "shots"))
    seed = fields.get(names.get("seed", "seed"))
    missing = dataclasses.MISSING
    return {
        "dataset_config": getattr(builder, "DEFAULT_CONFIG_NAME", None),
        "shots": None if shots is missing else shots,
        "split_seed": None if seed is missing else seed,
    }


def resolve_data_split(settings: Any, recorded: Mapping | None = None, source: str | None = None) -> DataSplit:
    """The split a stage uses: its set fields, else the input artefact's ``recorded`` split, else the defaults.

    A field that is set and differs from the recorded one is refused: a DDPO run or a dataset on another split
    than the adapter's would train or audit against images the adapter never saw (and miss the ones it did).
    """
    values = {}
    for key in SPLIT_KEYS:
        mine = getattr(settings, key, None)  # a target split's settings have no columns
        if recorded is not None and key in recorded:
            theirs = recorded[key]
            if mine is not None and mine != theirs:
                raise ProvenanceError(
                    f"--{key} {mine!r} contradicts {source}, which was trained on {key}={theirs!r} "
                    f"({_describe(recorded)}). Leave {key} unset to use the recorded value, or use an artefact "
                    f"trained on {key}={mine!r}."
                )
            values[key] = theirs
        else:
            values[key] = mine
    values["dataset_name"] = values["dataset_name"] or DEFAULT_DATASET
    for key, default in _dataset_defaults(values["dataset_name"]).items():
        if values[key] is None:
            values[key] = default
    from .data import check_identity_options

    values["dataset_revision"] = _dataset_revision(values["dataset_name"], settings, recorded, source)
    split = DataSplit(data_dir=settings.data_dir, **values)
    check_identity_options(split.dataset_name, split.dataset_config, **split.options())  # fails in milliseconds
    return split


def _dataset_revision(name: str, settings: Any, recorded: Mapping | None, source: str | None) -> str | None:
    """A Hub dataset's commit: the set revision's, else the recorded one (the artefact's very files), else the
    default branch's; a set revision whose commit is not the recorded one is refused. None for anything else
    (a local folder's records hold its fingerprint, which is no revision to load)."""
    from .data import UserIdentities, identity_builder
    from .data.user_data import hub_commit, is_local_dataset

    mine = getattr(settings, "dataset_revision", None)
    if identity_builder(name) is not UserIdentities or is_local_dataset(name):
        return mine  # refused by the loader when set: registered benchmarks and folders have no revisions
    theirs = (recorded or {}).get("dataset_revision")
    commit = hub_commit(name, mine or theirs)
    if theirs and commit != theirs:
        raise ProvenanceError(
            f"--dataset_revision {mine!r} is commit {commit} of {name}, but {source} was trained on commit {theirs} "
            f"({_describe(recorded)}). Leave dataset_revision unset to read the recorded commit, or use an artefact "
            "trained on this one."
        )
    return commit


class InputSplit(NamedTuple):
    """What a stage reads from its input artefact: the artefact's record and the real split it was trained on."""

    provenance: dict
    split: DataSplit
    data: datasets.DatasetDict
    data_record: dict


def load_input_split(settings: Any, folder: str | os.PathLike, source: str, cache_dir: str | None = None) -> InputSplit:
    """The input artefact's record and the real split it was trained on, as every stage after the cold start reads it.

    The split is :func:`resolve_data_split` of the stage's settings against the record (a contradiction is refused),
    written back onto ``settings`` (so its card, manifest and logs show the split used, not ``None``), loaded, and
    checked to be the very images the artefact saw (:func:`check_same_train_images`).
    """
    record = input_provenance(folder, getattr(settings, "allow_unrecorded_input", False), source)
    split = resolve_data_split(settings, record["data"], source)
    for key in (*SPLIT_KEYS, "dataset_revision"):
        if hasattr(settings, key):
            setattr(settings, key, getattr(split, key))
    data = split.load(cache_dir=cache_dir)
    data_record = split.record(data)
    check_same_train_images(record["data"] or {}, data_record, source)
    return InputSplit(record, split, data, data_record)


def _describe(record: Mapping) -> str:
    split = f"shots={record.get('shots')}, split_seed={record.get('split_seed')}"
    if record.get("dataset_name"):
        return f"{record['dataset_name']}/{record.get('dataset_config')}, {split}"
    return split


def check_same_train_images(recorded: Mapping, data_record: Mapping, source: str) -> None:
    """The real training images loaded now must be the ones ``source`` was trained on (e.g. another data_dir)."""
    if recorded.get("fingerprint") and recorded["fingerprint"] != data_record["fingerprint"]:
        raise ProvenanceError(
            f"The real training images of {_describe(data_record)} differ from those {source} was trained on "
            f"(fingerprint {data_record['fingerprint']} against {recorded['fingerprint']}): a changed --data_dir or "
            "dataset copy. Point --data_dir at the copy the adapter was trained on."
        )


def inherit_settings(config: Any, recorded: Mapping, fields: Mapping[str, str], source: str) -> dict[str, Any]:
    """Settings group values where the input artefact decides: a field left at its default takes the recorded
    value, a field set to anything else must equal it. Returns ``{record key: value}``."""
    defaults = {f.name: f for f in dataclasses.fields(config)}
    values = {}
    for key, name in fields.items():
        mine = getattr(config, name)
        if key not in recorded:
            values[key] = mine
            continue
        theirs = recorded[key]
        default = defaults[name].default
        if default is dataclasses.MISSING:
            default = defaults[name].default_factory()
        if _same(mine, theirs) or _same(mine, default):
            values[key] = theirs
            continue
        raise ProvenanceError(
            f"--{name} {mine!r} differs from {source}, which records {key}={theirs!r}. A stage scores and records "
            f"the settings its input was trained with: leave --{name} unset, or use an input made with {mine!r}."
        )
    return values


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# -- records -------------------------------------------------------------------------------------------------------
def reward_record(encoder: str, options: RewardOptions) -> dict[str, Any]:
    """The ``reward`` section: phi and the reward's options, as a policy was trained or a dataset scored with them."""
    return {"encoder": encoder, **options.record()}


def read_reward(record: Mapping[str, Any]) -> tuple[str | None, RewardOptions]:
    """phi and the options of a ``reward`` section (:func:`reward_record`; earlier records have the same keys)."""
    return record.get("encoder"), RewardOptions.from_record(record)


def stage_record(stage: str, data: Mapping | None, parent: Mapping | None = None, **sections: Any) -> dict:
    """A provenance record for an artefact of ``stage``."""
    return {"format": PROVENANCE_FORMAT, "stage": stage, "data": data, **sections, "parent": parent}


def parent_reference(path_or_id: str, folder: str | os.PathLike, revision: str | None = None) -> dict:
    """The input artefact as a parent: its id, revision and its own provenance (None when it has none)."""
    return {
        "id": str(path_or_id),
        "revision": revision or folder_revision(folder),
        "provenance": read_provenance(folder),
    }


def read_provenance(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    record = read_json(path, "a provenance record")
    if record.get("format") != PROVENANCE_FORMAT:
        raise ProvenanceError(f"{path} is not an rlsyn-trl provenance record (format {record.get('format')!r}).")
    return record


def input_provenance(folder: str | os.PathLike, allow_unrecorded: bool = False, source: str | None = None) -> dict:
    """An input artefact's record: its ``provenance.json``.

    Without one, the split, the reward settings and the photos the model was trained on are unknown: a later stage
    would fall back to defaults and accept any copy of the data, so it is refused. ``allow_unrecorded`` (the
    ``--allow_unrecorded_input`` flag, for hand-made or older adapters) accepts it, and the record is what the
    adapter's own config says of its split (``shots``, ``split_seed``), else empty.
    """
    from .utils.model_sources import adapter_config_path, generator_folder_kind

    record = read_provenance(folder)
    if record is not None:
        return record
    generator_folder_kind(folder)  # a folder that is no model at all is named as such, not as unrecorded
    if not allow_unrecorded:
        raise ProvenanceError(
            f"{source or folder} has no {PROVENANCE_FILE} (looked in {folder}): the split, the reward settings and "
            "the photos its model was trained on are unknown, so this run could not check them. Use a folder "
            "written by the package's recipes (they record it), or pass --allow_unrecorded_input true to take the "
            "split and reward settings from this run's own flags and defaults."
        )
    logger.warning(
        "%s has no %s: the split and reward settings come from this run's flags and defaults, unchecked "
        "(--allow_unrecorded_input).",
        source or folder,
        PROVENANCE_FILE,
    )
    config_path = adapter_config_path(folder)
    config = read_json(config_path, "an identity adapter's config") if config_path is not None else {}
    data = {key: config[key] for key in ("shots", "split_seed") if config.get(key) is not None}
    return stage_record(config.get("stage", "unknown"), data or None)


def write_provenance(folder: str | os.PathLike, record: Mapping) -> Path:
    return atomic_write_json(Path(folder) / PROVENANCE_FILE, record)


def lineage(record: Mapping | None) -> list[dict]:
    """The record and its ancestors, newest first."""
    chain = []
    while record:
        chain.append(dict(record))
        parent = record.get("parent") or {}
        record = parent.get("provenance")
    return chain


def seen_images(record: Mapping | None) -> set[str]:
    """Fingerprints of every real image any artefact of the chain was trained on."""
    return {image for item in lineage(record) for image in ((item.get("data") or {}).get("train_images") or ())}


def read_dataset_provenance(path_or_id: str | os.PathLike, revision: str | None = None) -> dict | None:
    """The provenance of a synthetic dataset: a local folder (or the generation run's folder above it) or a Hub
    dataset repo (its ``provenance.json``, from the local cache when offline)."""
    folder = Path(path_or_id).expanduser()
    if folder.is_dir():
        return read_provenance(folder) or read_provenance(folder.parent)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(str(path_or_id))
    except HFValidationError:
        raise FileNotFoundError(
            f"No synthetic dataset at {path_or_id}: no such folder, and not a Hub dataset id (owner/name). Pass the "
            "folder `rlsyn-trl generate` wrote (e.g. outputs/orl_faces/synthetic/dataset) or a Hub dataset id."
        ) from None

    try:
        path = hf_hub_download(str(path_or_id), PROVENANCE_FILE, repo_type="dataset", revision=revision)
    except (LocalEntryNotFoundError, RepositoryNotFoundError) as error:  # offline and not cached, or no such repo
        raise FileNotFoundError(
            f"No synthetic dataset at {path_or_id}: no such folder here, and no Hub dataset of that id "
            f"{'in the local cache (offline)' if isinstance(error, LocalEntryNotFoundError) else 'you can read'}. "
            "Pass the folder `rlsyn-trl generate` wrote (e.g. outputs/orl_faces/synthetic/dataset), or a Hub dataset "
            "id you can read (download it once on a connected machine to use it offline)."
        ) from None
    except EntryNotFoundError:
        return None
    return read_provenance(Path(path).parent)


def check_no_leak(synthetic: Mapping | None, real: datasets.DatasetDict, real_split: DataSplit, source: str) -> None:
    """Refuse synthetic data whose generator saw any evaluation image (every split of ``real`` but ``train``):
    the test would measure memorisation, not recognition.

    ``synthetic`` is the dataset's provenance (None: unknown, refused as well, since the check cannot be made).
    """
    if synthetic is None:
        raise ProvenanceError(
            f"{source} has no {PROVENANCE_FILE}, so it cannot be checked against the evaluation images of "
            f"{real_split.describe()}. Use a dataset written by the generation recipe (it records its provenance)."
        )
    seen = seen_images(synthetic)
    if not seen:
        raise ProvenanceError(f"{source}'s provenance records no training images of its generator.")
    evaluation = [name for name in real if name != "train"]
    leaked = [fingerprint in seen for name in evaluation for fingerprint in image_fingerprints(real[name])]
    if any(leaked):
        generator = next((item["data"] for item in lineage(synthetic) if item.get("data")), {})
        raise ProvenanceError(
            f"{source} was generated by a model trained on {_describe(generator)}, whose training images include "
            f"{sum(leaked)} of the {len(leaked)} evaluation images of this recognizer's split "
            f"{real_split.describe()}: the test would reward memorisation. Use the generator's split for the "
            f"recognizer (--shots {generator.get('shots')} --split_seed {generator.get('split_seed')}), or a "
            "synthetic set generated from an adapter trained on this split."
        )
