"""What ``rlsyn-trl inspect`` shows, as plain data: the samples of an identity in a chosen order and filter, its real
training photos, and each flagged sample paired with the real image it resembles.

The app (``app.py``) only lays these out, so everything a reader relies on (which samples are shown, in which order,
which real photo a flagged sample is set against, and at what distance against which threshold) is tested here,
without a browser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from PIL import Image

from ..generation import AUDIT_FILE, DATASET_DIR, HUB_DIR
from ..provenance import DataSplit, ProvenanceError, check_same_train_images, read_dataset_provenance

SCORE_COLUMNS = ("reward", "r_sem", "r_cov", "r_exp", "nn_real_distance", "nn_real_feature_distance")
FLAG_COLUMNS = ("memorized", "identity_consistent", "face_detected")
SPACE_COLUMNS = {  # the space that flagged a sample: its distance column, its nearest-row column
    "pixel": ("nn_real_distance", "nn_real_index"),
    "feature": ("nn_real_feature_distance", "nn_real_feature_index"),
}


@dataclass
class Inspection:
    """A synthetic dataset with what it was audited against: the real training split (when the provenance names
    one that can be loaded) and the audit summary (thresholds, rates, reference floor)."""

    source: str
    samples: datasets.Dataset
    real: datasets.Dataset | None = None
    audit: dict | None = None
    notes: list[str] = field(default_factory=list)  # why something the reader may expect is missing

    @property
    def thresholds(self) -> dict | None:
        return (self.audit or {}).get("audit", {}).get("thresholds")


@dataclass(frozen=True)
class NearestPair:
    """A flagged sample and the real training image it resembles most in the space that flagged it."""

    sample_row: int
    real_row: int
    space: str
    distance: float
    threshold: float | None
    identity: str
    real_identity: str | None


# -- loading ---------------------------------------------------------------------------------------------------------
def _dataset_folder(path: Path) -> Path:
    """A generation run's folder, its ``dataset/`` (save_to_disk) or ``hub/`` (parquet) folder: the data folder."""
    for name in (DATASET_DIR, HUB_DIR):
        if (path / name).is_dir():
            return path / name
    return path


def _read_samples(path_or_id: str, revision: str | None, cache_dir: str | None) -> tuple[datasets.Dataset, Path]:
    from ..hub import _dataset_snapshot, load_synthetic_dataset

    path = Path(path_or_id).expanduser()
    folder = _dataset_folder(path) if path.is_dir() else _dataset_snapshot(str(path_or_id), revision)
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(folder)), folder
    return load_synthetic_dataset(str(folder), cache_dir=cache_dir), folder


def _check_columns(samples: datasets.Dataset, source: str) -> None:
    needed = {"image", "identity", *SCORE_COLUMNS, *FLAG_COLUMNS}
    missing = sorted(needed - set(samples.column_names))
    if missing:
        raise ValueError(
            f"{source} lacks the columns {missing}: it is not a dataset written by `rlsyn-trl generate`, or one "
            "written by an older version. Generate it again to inspect it."
        )


def load_inspection(
    path_or_id: str | os.PathLike,
    revision: str | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> Inspection:
    """The synthetic dataset at ``path_or_id`` (a generation run's folder, its ``dataset/`` or ``hub/`` folder, or a
    Hub dataset id) with its audit summary and, when its provenance names it, the real training split.

    The real images must be the very ones the dataset was audited against (their fingerprints are checked); a
    dataset without provenance is shown without real photos, and the notes say so.
    """
    source = str(path_or_id)
    samples, folder = _read_samples(source, revision, cache_dir)
    _check_columns(samples, source)
    inspection = Inspection(source=source, samples=samples)
    audit_path = next((p / AUDIT_FILE for p in (folder, folder.parent) if (p / AUDIT_FILE).is_file()), None)
    if audit_path is not None:
        inspection.audit = json.loads(audit_path.read_text())
    else:
        inspection.notes.append(f"No {AUDIT_FILE} beside the dataset: the thresholds and rates are not shown.")
    provenance = read_dataset_provenance(folder)
    data = (provenance or {}).get("data")
    if not data or not data.get("dataset_name"):
        inspection.notes.append("The dataset records no real split (no provenance.json): no real photos are shown.")
        return inspection
    split = DataSplit.from_record(data, data_dir)
    try:
        real = split.load(cache_dir=cache_dir)
    except (OSError, ValueError) as error:  # the real files are not on this machine: show the samples alone
        inspection.notes.append(
            f"The real split {split.describe()} could not be loaded ({error}); pass --data-dir where its files are "
            "to see the real photos and the flagged pairs."
        )
        return inspection
    check_same_train_images(data, split.record(real), source)
    inspection.real = real["train"]
    return inspection


# -- views -----------------------------------------------------------------------------------------------------------
def identity_names(inspection: Inspection) -> list[str]:
    """The identities with samples, in the dataset's own order."""
    return list(dict.fromkeys(inspection.samples["identity"]))


def real_photos(inspection: Inspection, identity: str) -> list[tuple[Image.Image, str]]:
    """The identity's real training photos with their row in the real split (the ``nn_real_index`` values)."""
    if inspection.real is None:
        return []
    label = inspection.real.features["label"]
    if identity not in label.names:
        return []
    target = label.str2int(identity)
    rows = [row for row, value in enumerate(inspection.real["label"]) if value == target]
    return [(inspection.real[row]["image"], f"real {identity}, train row {row}") for row in rows]


def select_samples(
    samples: datasets.Dataset,
    identity: str | None = None,
    sort_by: str = "reward",
    descending: bool = True,
    flagged_only: bool = False,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
    flags: Mapping[str, bool] | None = None,
) -> list[int]:
    """Rows of ``samples`` to show, in order: of ``identity`` (None: all), memorised ones only if ``flagged_only``,
    each score within ``ranges[column] = (low, high)`` (inclusive, None: open) and each flag equal to
    ``flags[column]``, sorted by ``sort_by`` (ties by row, so the order is stable)."""
    ranges, flags = dict(ranges or {}), dict(flags or {})
    if flagged_only:
        flags["memorized"] = True
    sortable = (*SCORE_COLUMNS, *FLAG_COLUMNS, "sample_id")
    for name in (sort_by, *ranges, *flags):
        if name not in samples.column_names or name not in sortable:
            raise ValueError(f"Cannot sort or filter by {name!r}: choose one of {list(sortable)}.")
    columns = {name: samples[name] for name in {sort_by, *ranges, *flags}}
    identities = samples["identity"]
    rows = []
    for row in range(len(samples)):
        if identity is not None and identities[row] != identity:
            continue
        if any(bool(columns[name][row]) != bool(value) for name, value in flags.items()):
            continue
        if any(
            (low is not None and columns[name][row] < low) or (high is not None and columns[name][row] > high)
            for name, (low, high) in ranges.items()
        ):
            continue
        rows.append(row)
    key = columns[sort_by]
    return sorted(rows, key=lambda row: ((-1 if descending else 1) * float(key[row]), row))


def sample_caption(row: Mapping) -> str:
    """One line per sample: the reward and its terms, the identity and realism checks and the audit verdict."""
    checks = [
        f"reward {row['reward']:+.3f} (sem {row['r_sem']:.3f}, cov {row['r_cov']:.3f}, exp {row['r_exp']:.4f})",
        "consistent" if row["identity_consistent"] else "NOT consistent",
        "face" if row["face_detected"] else "no face",
        f"MEMORISED ({row.get('memorized_by') or 'flagged'})" if row["memorized"] else "not memorised",
    ]
    return f"#{row.get('sample_id', '?')} " + "; ".join(checks)


TABLE_COLUMNS = ("sample_id", *SCORE_COLUMNS, *FLAG_COLUMNS, "memorized_by")


def score_table(samples: datasets.Dataset, rows: Sequence[int]) -> list[list]:
    """The shown samples' scores, one row each in the given order (columns: ``TABLE_COLUMNS``; scores to 4
    decimals)."""
    if not rows:
        return []
    table = samples.select(rows).select_columns([c for c in TABLE_COLUMNS if c in samples.column_names])

    def cell(value):
        return round(value, 4) if isinstance(value, float) else value

    return [[cell(record.get(column, "")) for column in TABLE_COLUMNS] for record in table]


def nearest_pairs(inspection: Inspection, rows: Sequence[int]) -> list[NearestPair]:
    """Each memorised sample among ``rows`` with the nearest real training image of the space that flagged it
    (pixel first when both did), its distance and that space's threshold."""
    thresholds = inspection.thresholds or {}
    names = inspection.real.features["label"].names if inspection.real is not None else None
    real_labels = inspection.real["label"] if inspection.real is not None else None
    pairs = []
    for row in rows:
        sample = inspection.samples[row]
        if not sample["memorized"]:
            continue
        spaces = [space for space in (sample.get("memorized_by") or "pixel").split("+") if space in SPACE_COLUMNS]
        space = spaces[0] if spaces else "pixel"
        distance_column, index_column = SPACE_COLUMNS[space]
        if index_column not in sample:
            raise ProvenanceError(
                f"{inspection.source} does not record the nearest real image of each sample ({index_column}): "
                "generate it again with this version to see the flagged pairs."
            )
        real_row = int(sample[index_column])
        pairs.append(
            NearestPair(
                sample_row=row,
                real_row=real_row,
                space=space,
                distance=float(sample[distance_column]),
                threshold=thresholds.get(space),
                identity=sample["identity"],
                real_identity=names[real_labels[real_row]] if names is not None else None,
            )
        )
    return pairs


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_markdown(inspection: Inspection) -> str:
    """The dataset card's summary: memorisation rate against the held-out real floor, consistency and realism."""
    samples = inspection.samples
    lines = [f"### {inspection.source}", f"{len(samples)} samples of {len(identity_names(inspection))} identities."]
    if inspection.audit:
        audit, reference = inspection.audit["audit"], inspection.audit.get("reference")
        thresholds, rates = audit["thresholds"], audit["memorization"]
        floor = _percent(reference["memorization"]["rate"]) if reference else "n/a (no held-out real images)"
        lines += [
            f"**Memorisation rate {_percent(rates['rate'])}** ({rates['count']} of {rates['total']}) against a "
            f"held-out real floor of **{floor}**; rule `{thresholds['criterion']}`, thresholds pixel "
            f"{thresholds['pixel']:.4f}, feature {thresholds['feature']:.4f} ({thresholds['percentile']:g}th "
            f"percentile of {thresholds['num_pairs']} {thresholds['source']} same-identity pairs).",
            f"Identity consistency {_percent(inspection.audit['identity_consistency'])} (held-out real "
            f"{_percent(reference['identity_consistency']) if reference else 'n/a'}); face detected "
            f"{_percent(inspection.audit['face_detection_rate'])} (held-out real "
            f"{_percent(reference['face_detection_rate']) if reference else 'n/a'}).",
        ]
    lines += [f"_{note}_" for note in inspection.notes]
    return "\n\n".join(lines)
