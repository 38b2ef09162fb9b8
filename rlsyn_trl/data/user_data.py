"""Identity data where users keep it: a Hub dataset repo, or a local folder laid out like one, as an identity builder.

A team's own people are rarely one of the registered benchmarks. Their photos sit in a (private) Hub dataset repo
or in a folder on disk, as Parquet shards with a dataset card's ``configs:`` YAML, as Arrow files, or as an
``imagefolder`` tree (``train/<identity>/<image>``). :class:`UserIdentities` reads any of them through
``datasets.load_dataset`` and gives the stages what every registered builder gives: ``image``, ``label`` (a
``ClassLabel`` over the identities), ``identity`` and ``source`` columns, with ``shots`` training images per identity
drawn with the split ``seed`` and the identity's other images held out as ``test`` (``num_identities`` draws an
identity subset first, as for CASIA-WebFace: :func:`.casia_webface.select_subset`).

A Hub repo is read from a snapshot (:func:`locate_user_dataset`), pinned to the commit its revision resolves to, so a
later stage reads the very files an earlier one trained on, offline once cached; a local folder is keyed by its
content fingerprint (:func:`._folders.folder_fingerprint`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets

from ..utils.model_sources import looks_like_repo_id
from ._folders import check_image, folder_fingerprint, image_value, read_image
from ._options import CheckedBuilder, identity_features
from .casia_webface import select_subset
from .option_checks import require_count

logger = logging.getLogger(__name__)

PREFERRED_LABEL_NAMES = ("identity", "label", "person_id", "person", "subject", "name")


def is_local_dataset(name: str) -> bool:
    """A folder on disk (checked first: a relative ``owner/name`` folder is the user's, not the Hub's)."""
    return Path(name).expanduser().is_dir()


def is_user_dataset(name: str) -> bool:
    """A local folder or a Hub dataset id: what :class:`UserIdentities` reads."""
    return is_local_dataset(name) or looks_like_repo_id(name)


def locate_user_dataset(name: str, revision: str | None, config_name: str | None = None) -> tuple[Path, str]:
    """The folder to read ``name`` from and its revision: the commit a Hub ``revision`` resolves to (a snapshot in
    the Hugging Face cache, used offline once there), else the local folder's content fingerprint.

    Only the dataset card and the files of ``config_name`` named by its ``configs:`` YAML are fetched, when the card
    names them; otherwise the whole repo.
    """
    if is_local_dataset(name):
        if revision is not None:
            raise ValueError(
                f"--dataset_revision {revision!r}: {name} is a local folder, which has no revisions. Leave "
                "dataset_revision unset (the folder's contents are fingerprinted instead)."
            )
        folder = Path(name).expanduser()
        return folder, f"fingerprint:{folder_fingerprint(folder)}"
    if not looks_like_repo_id(name):
        raise FileNotFoundError(
            f"--dataset_name {name!r} is not a registered identity benchmark, an existing folder or a Hub dataset id "
            "(owner/name). Check the path, or pass the repo id of a Hub dataset."
        )
    commit = hub_commit(name, revision)
    patterns = _config_patterns(_snapshot(name, commit, ["README.md"]) / "README.md", config_name)
    snapshot = _snapshot(name, commit, None if patterns is None else ["README.md", *patterns])
    return snapshot, snapshot.name


def hub_commit(name: str, revision: str | None) -> str:
    """The commit ``revision`` (None: the default branch) of Hub dataset ``name`` resolves to; only the dataset
    card is fetched, so a split is pinned before any image is."""
    return _snapshot(name, revision, ["README.md"]).name


def _snapshot(name: str, revision: str | None, patterns: list[str] | None) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    at = f" at revision {revision!r}" if revision else ""
    fetch = f"hf download {name} --repo-type dataset" + (f" --revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(name, repo_type="dataset", revision=revision, allow_patterns=patterns))
    except LocalEntryNotFoundError as error:
        reason = "HF_HUB_OFFLINE=1 forbids downloading it" if constants.HF_HUB_OFFLINE else "the Hub is unreachable"
        raise FileNotFoundError(
            f"Dataset repo {name!r}{at} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"{reason}. Fetch it once with `{fetch}`, or pass a local folder as --dataset_name."
        ) from error
    except RevisionNotFoundError as error:
        raise FileNotFoundError(
            f"Dataset repo {name!r} has no revision {revision!r}: pass a branch, tag or commit of the repo, or leave "
            "--dataset_revision unset for the latest."
        ) from error
    except RepositoryNotFoundError as error:  # gated or private repos without access land here too
        raise FileNotFoundError(
            f"No dataset repo {name!r} on the Hub, or no access to it: check the id, and log in (`hf auth login`) "
            "for a private or gated repo."
        ) from error


def _config_patterns(readme: Path, config_name: str | None) -> list[str] | None:
    """The data file patterns the card's ``configs:`` YAML gives ``config_name`` (None: not stated, fetch all)."""
    if not readme.is_file():
        return None
    from huggingface_hub import DatasetCard

    configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
    chosen = [c for c in configs if c.get("config_name") == config_name or (config_name is None and c.get("default"))]
    if config_name is None and not chosen and len(configs) == 1:
        chosen = configs
    if len(chosen) != 1:
        return None
    files = chosen[0].get("data_files")
    entries = files if isinstance(files, list) else [files]
    patterns = []
    for entry in entries:
        paths = entry.get("path") if isinstance(entry, dict) else entry
        patterns.extend([paths] if isinstance(paths, str) else list(paths or []))
    return patterns or None


@dataclass
class UserIdentitiesConfig(datasets.BuilderConfig):
    """The source (``source``: Hub id or folder as the user gave it; ``data_dir``: the folder read, a snapshot for
    a Hub id), its ``datasets`` config and resolved ``revision``, the columns (None: detected) and the split."""

    source: str | None = None
    source_config: str | None = None
    revision: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    shots: int | None = None
    seed: int = 0
    num_identities: int | None = None


class UserIdentities(CheckedBuilder):
    """A user's identity dataset: ``train`` holds ``shots`` images per identity, ``test`` the rest (none when every
    image trains, ``shots`` None)."""

    BUILDER_CONFIG_CLASS = UserIdentitiesConfig
    REGISTERED_NAME = "<Hub id or folder>"
    CONFIG_SETTING = "`dataset_config`: the dataset's own config"

    def __init__(self, *args, cache_dir: str | None = None, **kwargs):
        self._source_cache_dir = cache_dir  # the source's own build goes to the same cache as this one
        super().__init__(*args, cache_dir=cache_dir, **kwargs)

    @classmethod
    def check_config_name(cls, config_name: str | None) -> None:
        """The source's config travels as ``source_config``; the builder's own config is always the default."""

    @classmethod
    def check_config(cls, config: UserIdentitiesConfig) -> None:
        dataset = config.source or "the dataset"
        require_count(dataset, "shots", config.shots, "real training images per identity", optional=True)
        require_count(dataset, "seed", config.seed, "the split seed, `split_seed` in the stages", minimum=0)
        require_count(dataset, "num_identities", config.num_identities, "identities drawn", optional=True)

    @classmethod
    def check_options(cls, config_name: str | None, **options) -> None:
        allowed = ("revision", "image_column", "label_column", "shots", "seed", "num_identities")
        unknown = sorted(set(options) - {"source", "source_config", *allowed})
        if unknown:
            raise ValueError(
                f"{options.get('source')} takes no {', '.join(unknown)}; a Hub dataset or folder takes {allowed}."
            )
        cls.check_config(UserIdentitiesConfig(**{key: value for key, value in options.items() if value is not None}))

    @functools.cached_property
    def _source(self) -> tuple[datasets.Dataset, str]:
        """The source split holding the identities (``train``, else the only one) and its name."""
        folder, name = self.config.data_dir, self.config.source
        try:
            splits = datasets.load_dataset(str(folder), self.config.source_config, cache_dir=self._source_cache_dir)
        except ValueError as error:  # an unknown config, or files datasets cannot read
            raise ValueError(f"Cannot read the dataset {name} ({folder}): {error}") from error
        if "train" in splits:
            return splits["train"], "train"
        if len(splits) != 1:
            raise ValueError(f"{name} has splits {sorted(splits)} and none is `train`: keep the identities in `train`.")
        return next(iter(splits.values())), next(iter(splits))

    @functools.cached_property
    def columns(self) -> tuple[str, str]:
        """The image and identity columns of the source (:func:`identity_columns`)."""
        config = self.config
        return identity_columns(self._source[0].features, config.source, config.image_column, config.label_column)

    @functools.cached_property
    def _rows(self) -> dict[str, tuple[list[int], list[int]]]:
        """Chosen identity -> (training rows, held-out rows) of the source split (:func:`split_rows`)."""
        source, _ = self._source
        _, label = self.columns
        config = self.config
        return split_rows(source[label], source.features[label], config.source, config, label)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"Identities of {self.config.source} with `shots` training images each, the rest held out.",
            features=identity_features(list(self._rows)),
        )

    def _split_generators(self, dl_manager):
        splits = [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"part": 0})]
        if any(test for _, test in self._rows.values()):
            splits.append(datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"part": 1}))
        return splits

    def _generate_examples(self, part: int):
        source, split = self._source
        image_column, _ = self.columns
        raw = source.cast_column(image_column, datasets.Image(decode=False))
        for label, rows in enumerate(parts[part] for parts in self._rows.values()):
            identity = self.info.features["label"].int2str(label)
            for row in rows:
                image = raw[row][image_column]
                name = f"{split}[{row}]"
                data = read_image(Path(image["path"])) if image["bytes"] is None else check_image(image["bytes"], name)
                yield name, {"image": image_value(data), "label": label, "identity": identity, "source": name}


def identity_columns(
    features: datasets.Features, name: str | None, image_column: str | None, label_column: str | None
) -> tuple[str, str]:
    """The image and identity columns: the ones asked for, else the only ``Image`` feature and the only
    ``ClassLabel`` (else string) column, or one of those named like an identity. Shared by the built and the
    streamed reading (:mod:`.streaming`), so both read the same columns."""
    images = [column for column, feature in features.items() if isinstance(feature, datasets.Image)]
    image = image_column or _only(images, name, "image", "an Image feature")
    if not isinstance(features.get(image), datasets.Image):
        raise ValueError(
            f"--image_column {image!r}: {name} has no Image column of that name; its Image columns: {images}."
        )
    labels = [column for column, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
    if not labels:
        strings = ("string", "large_string")
        labels = [c for c, f in features.items() if isinstance(f, datasets.Value) and f.dtype in strings]
    label = label_column or _only(labels, name, "label", "a ClassLabel or string identity column")
    feature = features.get(label)
    if not isinstance(feature, (datasets.ClassLabel, datasets.Value)) or label == image:
        raise ValueError(
            f"--label_column {label!r}: {name} has no identity column of that name (a ClassLabel, string or "
            f"integer column); its columns: {list(features)}."
        )
    return image, label


def split_rows(values, feature, name: str | None, options, label: str) -> dict[str, tuple[list[int], list[int]]]:
    """Chosen identity -> (training rows, held-out rows), from the identity column's ``values`` in row order.

    ``options`` holds ``shots``, ``seed`` and ``num_identities`` (:func:`.casia_webface.select_subset` draws). The
    built dataset and the streamed one (:mod:`.streaming`, which reads this column alone) both split here, so a
    split means the same rows either way."""
    identities: dict[str, list[str]] = {}
    values = list(values)
    width = len(str(len(values)))
    skipped = 0
    for row, value in enumerate(values):
        if value is None or (isinstance(feature, datasets.ClassLabel) and value < 0):
            skipped += 1
            continue
        identity = feature.int2str(value) if isinstance(feature, datasets.ClassLabel) else str(value)
        identities.setdefault(identity, []).append(f"{row:0{width}d}")  # padded: name order is row order
    if skipped:
        logger.warning("%d rows of %s have no identity in %r and are left out.", skipped, name, label)
    if not identities:
        raise ValueError(f"No labelled images in {name}: column {label!r} holds no identity.")
    chosen = select_subset(identities, options.num_identities, options.shots, options.seed)
    return {
        identity: ([int(row) for row in rows], sorted(int(row) for row in set(identities[identity]) - set(rows)))
        for identity, rows in chosen.items()
    }


def _only(candidates: list[str], dataset: str, option: str, what: str) -> str:
    """The one candidate column, else one named like an identity (labels only), else a refusal naming them."""
    if len(candidates) == 1:
        return candidates[0]
    named = [c for c in candidates if option == "label" and c.lower() in PREFERRED_LABEL_NAMES]
    if len(named) == 1:
        return named[0]
    found = f"several: {candidates}" if candidates else "none"
    raise ValueError(f"{dataset} needs {what} to read; found {found}. Name it with --{option}_column.")
