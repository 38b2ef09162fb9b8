"""Writing a scored run: the dataset card, ``dataset/`` (``load_from_disk``), ``hub/`` (the Hub layout) and the
audit summary, each swapped into place whole."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import datasets
from huggingface_hub import DatasetCardData

from ..cards import inherited_terms, render_dataset_card, size_category, terms_text
from ..utils.io import atomic_write_text, replace_folder
from .config import GenerationConfig

DATASET_DIR = "dataset"
HUB_DIR = "hub"
AUDIT_FILE = "audit.json"
CARD_TEMPLATE = "synthetic_dataset.md"
HUB_FILE_BYTES = 256 * 2**20  # parquet files of at most ~256 MB, like datasets' push_to_hub


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _hub_card(config: GenerationConfig, summary: dict) -> str:
    """The dataset card (``model_cards/synthetic_dataset.md``) with the audit, quality figures and provenance."""
    base_model = summary.get("base_model")
    terms = inherited_terms(base_model, config.dataset_name)
    card_data = DatasetCardData(
        pretty_name=f"Synthetic {config.dataset_name} identities",
        tags=["rlsyn-trl", "synthetic", "identity", "memorization-audit"],
        task_categories=["image-classification"],
        size_categories=[size_category(summary["num_samples"])],
        source_datasets=[f"extended|{config.dataset_name}"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
        **(terms.metadata() if terms else {}),
    )
    audit, reference, evaluator = summary["audit"], summary["reference"], summary.get("evaluator")
    floors = reference["memorization"]["per_identity"] if reference else {}
    rows = [
        {
            "identity": name,
            "memorized": _percent(values["memorized"]),
            "floor": _percent(floors.get(name)),
            "consistency": _percent(values["identity_consistent"]),
            "faces": _percent(values["face_detected"]),
            "reward": f"{values['reward']:+.3f}",
        }
        for name, values in summary["per_identity"].items()
    ]
    return render_dataset_card(
        CARD_TEMPLATE,
        card_data,
        summary=summary,
        thresholds=audit["thresholds"],
        repo_id=config.hub_dataset_id or "<owner>/<name>",
        public_dataset=f"{config.dataset_name}/{config.public_dataset_config}",
        rate=_percent(audit["memorization"]["rate"]),
        pixel_rate=_percent(audit["memorization"]["pixel_rate"]),
        feature_rate=_percent(audit["memorization"]["feature_rate"]),
        floor=_percent(reference["memorization"]["rate"]) if reference else None,
        consistency=_percent(summary["identity_consistency"]),
        faces=_percent(summary["face_detection_rate"]),
        reference_consistency=_percent(reference["identity_consistency"]) if reference else "n/a",
        evaluator_consistency=_percent(evaluator["identity_consistency"]) if evaluator else "n/a",
        reference_evaluator_consistency=_percent(reference.get("evaluator_identity_consistency"))
        if reference and evaluator
        else "n/a",
        reference_faces=_percent(reference["face_detection_rate"]) if reference else "n/a",
        max_rate=_percent(config.max_memorization_rate),
        terms=terms_text(terms, base_model or summary["generator_id"], summary["dataset"]),
        rows=rows,
    )


def _write_outputs(dataset: datasets.Dataset, card: str, summary: dict, output: Path) -> None:
    """``dataset/`` (save_to_disk + card), ``hub/`` (parquet files + card, the Hub layout) and ``audit.json``, in
    each of them too: a reader of the published dataset (``rlsyn-trl inspect``) finds the thresholds beside it."""
    audit = json.dumps(summary, indent=2)
    tmp = output / (DATASET_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    (tmp / "README.md").write_text(card)
    (tmp / AUDIT_FILE).write_text(audit)
    replace_folder(tmp, output / DATASET_DIR)

    tmp = output / (HUB_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    num_files = max(1, math.ceil(dataset.data.nbytes / HUB_FILE_BYTES))
    for index in range(num_files):
        part = dataset.shard(num_shards=num_files, index=index, contiguous=True)
        part.to_parquet(str(tmp / "data" / f"train-{index:05d}-of-{num_files:05d}.parquet"))
    (tmp / "README.md").write_text(card)
    (tmp / AUDIT_FILE).write_text(audit)
    replace_folder(tmp, output / HUB_DIR)
    atomic_write_text(output / AUDIT_FILE, audit)
