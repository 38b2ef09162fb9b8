"""Synthetic dataset generation: sample an identity adapter, score every sample, audit it, write it, publish it.

``generate_synthetic_dataset`` draws ``samples_per_identity`` images for each identity, in SHARDS of ``shard_size``
samples. Each shard has its own seed, derived from the base seed and the shard index alone, and is written to a
temporary file then renamed into place: a killed run resumes at the first missing shard and the result is the same,
sample for sample, wherever it was interrupted. A manifest holds a fingerprint of everything that decides the samples
(adapter and its revision, identities, counts, seeds, sampler settings), so a folder holding another run's shards is
refused instead of silently mixed.

Once every shard exists, the samples are scored against the real TRAINING images: the composite reward terms
(memory bank, groups = all samples of an identity), the memorisation audit (``rlsyn_trl.audit``) and the face
detector (``rlsyn_trl.realism``). Held-out real images, when the dataset has them, get the same audit and checks as
the reference floor. The result is written as ``output_dir/dataset`` (``datasets.load_from_disk``) and
``output_dir/hub`` (parquet files + README card, the Hub layout ``datasets.load_dataset`` reads), and is pushed to a
PRIVATE Hub repo when asked, unless its memorisation rate is above ``max_memorization_rate``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from huggingface_hub import DatasetCardData, HfApi
from PIL import Image
from tqdm.auto import tqdm

from .audit import AUDIT_CRITERIA, THRESHOLD_SOURCES, audit_images, calibrate_thresholds, memorization_rates
from .cards import render_dataset_card
from .data import load_identity_dataset, preprocess_images, tensor_to_pil
from .encoders import IdentityEncoder, load_encoder
from .generators import IdentityGenerator, resolve_pretrained_folder
from .generators.adapter import ADAPTER_CONFIG, read_adapter_config
from .hub import DEFAULT_MAX_MEMORIZATION_RATE, push_synthetic_dataset
from .metrics.identity import identity_consistency, nearest_prototype
from .realism import detect_faces
from .rewards import MemoryBank

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
DATASET_DIR = "dataset"
HUB_DIR = "hub"
AUDIT_FILE = "audit.json"
CARD_TEMPLATE = "synthetic_dataset.md"
RUN_FORMAT = "rlsyn-synthetic-shards/1"
HUB_FILE_BYTES = 256 * 2**20  # parquet files of at most ~256 MB, like datasets' push_to_hub
SHARD_FEATURES = datasets.Features(
    {
        "sample_id": datasets.Value("int64"),
        "identity": datasets.Value("string"),
        "seed": datasets.Value("int64"),
        "image": datasets.Image(),
    }
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CONFIG_FILES = ("adapter_config.json", "model_index.json", "config.json", "scheduler_config.json")


@dataclass
class GenerationConfig:
    """The generation recipe's settings; each field is a YAML key / CLI flag."""

    adapter: str = field(
        default="outputs/orl_faces/sft", metadata={"help": "Identity adapter: a local folder or a Hub id (owner/name)."}
    )
    adapter_revision: str | None = None
    encoder: str = field(default="embedded:orl_faces/encoder", metadata={"help": "Identity encoder (phi)."})
    encoder_revision: str | None = None
    dataset_name: str = field(default="orl_faces", metadata={"help": "The real data the adapter was trained on."})
    dataset_config: str = "private"
    public_dataset_config: str | None = field(
        default="public",
        metadata={"help": "Public identities: reward spread and audit threshold when there is 1 shot; None: none."},
    )
    data_dir: str | None = None
    dataset_cache_dir: str | None = None
    shots: int | None = field(
        default=None, metadata={"help": "Real train images per identity; None: the shots recorded in the adapter."}
    )
    split_seed: int | None = field(default=None, metadata={"help": "None: the split seed recorded in the adapter."})
    identities: list[str] | None = field(
        default=None, metadata={"help": "Identity names to generate; None: every label of the real data."}
    )
    samples_per_identity: int = 50
    seed: int = field(default=0, metadata={"help": "Base seed; each shard's seed is derived from it and its index."})
    shard_size: int = field(default=100, metadata={"help": "Samples per shard (the unit of resumption)."})
    batch_size: int = 64
    num_inference_steps: int = 50
    guidance_scale: float = 2.0
    eta: float = 0.0
    device: str | None = field(default=None, metadata={"help": "cuda, cpu...; None: cuda when available."})
    output_dir: str = "outputs/orl_faces/synthetic"
    audit_percentile: float = field(default=5.0, metadata={"help": "Percentile of same-identity real distances."})
    memorization_criterion: str = field(
        default="either", metadata={"help": f"How pixel and feature tests combine: {', '.join(AUDIT_CRITERIA)}."}
    )
    threshold_source: str = field(
        default="auto", metadata={"help": "auto (private pairs if any, else public), private or public."}
    )
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 0.75, 0.25])
    reward_alpha: float = 0.5
    push_to_hub: bool = False
    hub_dataset_id: str | None = None
    hub_private: bool = field(default=True, metadata={"help": "Hub repos are private unless set to false."})
    max_memorization_rate: float = DEFAULT_MAX_MEMORIZATION_RATE
    force_push: bool = field(default=False, metadata={"help": "Push even above max_memorization_rate."})

    def __post_init__(self) -> None:
        if self.samples_per_identity < 2:
            raise ValueError(
                "samples_per_identity must be >= 2: the coverage and expression rewards are set-level terms over "
                f"the samples of an identity (got {self.samples_per_identity})."
            )
        for name in ("shard_size", "batch_size", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.memorization_criterion not in AUDIT_CRITERIA:
            raise ValueError(f"memorization_criterion must be one of {AUDIT_CRITERIA}")
        if self.threshold_source not in THRESHOLD_SOURCES:
            raise ValueError(f"threshold_source must be one of {THRESHOLD_SOURCES}")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub needs hub_dataset_id (owner/name).")


# -- run identity ------------------------------------------------------------------------------------------------
def folder_revision(folder: Path) -> str:
    """The commit of a Hub snapshot, else a content hash of a local folder's weights and configs.

    A local adapter folder is often retrained in place; hashing its files lets the manifest tell the runs apart.
    """
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


def shard_seed(seed: int, shard: int) -> int:
    """A shard's seed from the base seed and the shard index only (independent streams via numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, shard]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)  # fits the int64 `seed` column


@dataclass(frozen=True)
class SamplingPlan:
    """Which samples exist: identity-major global ids ``0 .. K*N-1`` cut into shards of ``shard_size``."""

    identities: tuple[str, ...]
    samples_per_identity: int
    shard_size: int
    seed: int

    @property
    def total(self) -> int:
        return len(self.identities) * self.samples_per_identity

    @property
    def num_shards(self) -> int:
        return math.ceil(self.total / self.shard_size)

    def sample_ids(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.total, (shard + 1) * self.shard_size))

    def identity(self, sample_id: int) -> str:
        return self.identities[sample_id // self.samples_per_identity]


def _check_writable(folder: Path) -> None:
    """Fail at once, with the folder named, rather than after minutes of sampling."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(
            f"Cannot write to the output folder {folder} ({error.strerror or error}). Choose an output_dir you can "
            "write to, or fix its permissions."
        ) from error


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_manifest(output: Path, run: dict) -> None:
    """Write the run's manifest, or check that the folder's shards belong to this very run."""
    fingerprint = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
    path = output / MANIFEST
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing.get("fingerprint") != fingerprint:
            old = existing.get("run", {})
            changed = sorted(key for key in run.keys() | old.keys() if run.get(key) != old.get(key))
            details = "; ".join(f"{key}: {old.get(key)!r} -> {run.get(key)!r}" for key in changed)
            raise FileExistsError(
                f"{output} holds the shards of a different generation run (changed: {details}). Mixing them would "
                "give a dataset no single setting produced: choose another output_dir, or delete this one to restart."
            )
        return
    shards = output / SHARDS_DIR
    if shards.is_dir() and any(shards.glob("*.parquet")):
        raise FileExistsError(f"{shards} holds shards without a {MANIFEST}: they cannot be attributed to this run.")
    _atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "run": run}, indent=2))


# -- sampling ----------------------------------------------------------------------------------------------------
def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.parquet"


def _write_shard(path: Path, images: torch.Tensor, identities: list[str], sample_ids: range, seed: int) -> None:
    """One shard as a parquet file, through a temporary name: a file under the final name is always complete."""
    table = datasets.Dataset.from_dict(
        {
            "sample_id": list(sample_ids),
            "identity": identities,
            "seed": [seed] * len(identities),
            "image": tensor_to_pil(images),
        },
        features=SHARD_FEATURES,
    ).data.table
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _sample_shards(generator: IdentityGenerator, plan: SamplingPlan, folder: Path, config: GenerationConfig) -> None:
    """Generate every missing shard; leftovers of a write that was killed half-way are discarded first."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.tmp"):
        stale.unlink()
    todo = [shard for shard in range(plan.num_shards) if not shard_path(folder, shard).is_file()]
    done = plan.total - sum(len(plan.sample_ids(shard)) for shard in todo)
    if done == plan.total:
        logger.info("All %d samples are already written in %s: scoring them again", done, folder)
    elif done:
        logger.info("Resuming: %d of %d samples already written in %s", done, plan.total, folder)
    with tqdm(total=plan.total, initial=done, unit="sample", desc="generating") as progress:
        for shard in todo:
            ids = plan.sample_ids(shard)
            identities = [plan.identity(sample_id) for sample_id in ids]
            seed = shard_seed(plan.seed, shard)
            images = generator.sample(
                identities,
                seed=seed,
                num_inference_steps=config.num_inference_steps,
                guidance_scale=config.guidance_scale,
                eta=config.eta,
                batch_size=config.batch_size,
            )
            _write_shard(shard_path(folder, shard), images.cpu(), identities, ids, seed)
            progress.update(len(ids))


def _read_shards(plan: SamplingPlan, folder: Path) -> dict[str, list]:
    """All shards' rows in sample order, checked to hold every planned sample exactly once."""
    rows = pa.concat_tables([pq.read_table(shard_path(folder, shard)) for shard in range(plan.num_shards)])
    rows = rows.to_pydict()
    if rows["sample_id"] != list(range(plan.total)):
        raise RuntimeError(f"The shards in {folder} do not hold samples 0..{plan.total - 1} exactly once.")
    expected = [plan.identity(sample_id) for sample_id in range(plan.total)]
    if rows["identity"] != expected:
        raise RuntimeError(f"The shards in {folder} disagree with the sampling plan's identities.")
    return rows


# -- scoring -----------------------------------------------------------------------------------------------------
@dataclass
class _Images:
    """One image set seen twice: in the audit's pixel space and as the encoder's input."""

    pixels: torch.Tensor
    encoder_inputs: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_pil(
        cls, images: list[Image.Image], labels: torch.Tensor, resolution: int, channels: int, encoder: IdentityEncoder
    ) -> _Images:
        size, encoder_channels = encoder.config.image_size, encoder.config.num_channels
        pixels = preprocess_images(images, resolution, channels)
        same = (size, encoder_channels) == (resolution, channels)
        return cls(pixels, pixels if same else preprocess_images(images, size, encoder_channels), labels)

    @classmethod
    def from_split(cls, split: datasets.Dataset, resolution: int, channels: int, encoder: IdentityEncoder) -> _Images:
        return cls.from_pil(list(split["image"]), torch.tensor(split["label"]), resolution, channels, encoder)


def _per_identity(values: dict[str, torch.Tensor], labels: torch.Tensor, label_names: list[str]) -> dict:
    """``{identity: {name: mean of values[name] over its samples}}`` for the identities present in ``labels``."""
    return {
        label_names[identity]: {name: value[labels == identity].float().mean().item() for name, value in values.items()}
        for identity in labels.unique().tolist()
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _hub_card(config: GenerationConfig, summary: dict) -> str:
    """The dataset card (``model_cards/synthetic_dataset.md``) with the audit, quality figures and provenance."""
    total = summary["num_samples"]
    size = "n<1K" if total < 1_000 else "1K<n<10K" if total < 10_000 else "10K<n<100K"
    card_data = DatasetCardData(
        pretty_name=f"Synthetic {config.dataset_name} identities",
        tags=["rlsyn-trl", "synthetic", "identity", "memorization-audit"],
        task_categories=["image-classification"],
        size_categories=[size],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    )
    audit, reference = summary["audit"], summary["reference"]
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
        reference_faces=_percent(reference["face_detection_rate"]) if reference else "n/a",
        max_rate=_percent(config.max_memorization_rate),
        rows=rows,
    )


def _replace_folder(tmp: Path, final: Path) -> None:
    """Swap a freshly written folder into place, so the final name never holds a half-written one."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


def _write_outputs(dataset: datasets.Dataset, card: str, summary: dict, output: Path) -> None:
    """``dataset/`` (save_to_disk + card), ``hub/`` (parquet files + card, the Hub layout) and ``audit.json``."""
    tmp = output / (DATASET_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    (tmp / "README.md").write_text(card)
    _replace_folder(tmp, output / DATASET_DIR)

    tmp = output / (HUB_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    num_files = max(1, math.ceil(dataset.data.nbytes / HUB_FILE_BYTES))
    for index in range(num_files):
        part = dataset.shard(num_shards=num_files, index=index, contiguous=True)
        part.to_parquet(str(tmp / "data" / f"train-{index:05d}-of-{num_files:05d}.parquet"))
    (tmp / "README.md").write_text(card)
    _replace_folder(tmp, output / HUB_DIR)
    _atomic_write_text(output / AUDIT_FILE, json.dumps(summary, indent=2))


def _score(
    config: GenerationConfig, rows: dict[str, list], data: datasets.DatasetDict, run: dict
) -> tuple[datasets.Dataset, dict]:
    """Rewards, audit and realism of the samples (and of the held-out real images, the reference floor)."""
    label_feature = data["train"].features["label"]
    label_names = label_feature.names
    pil_images = [datasets.Image().decode_example(image) for image in rows["image"]]
    resolution, channels = pil_images[0].width, len(pil_images[0].getbands())
    encoder = load_encoder(config.encoder, config.encoder_revision)
    labels = torch.tensor([label_names.index(name) for name in rows["identity"]])
    samples = _Images.from_pil(pil_images, labels, resolution, channels, encoder)
    train = _Images.from_split(data["train"], resolution, channels, encoder)
    public = public_features = None
    if config.public_dataset_config:
        load = {"data_dir": config.data_dir, "cache_dir": config.dataset_cache_dir}
        public_split = load_identity_dataset(config.dataset_name, config.public_dataset_config, **load)["train"]
        public = _Images.from_split(public_split, resolution, channels, encoder)
        public_features = encoder.encode_batched(public.encoder_inputs)
    bank = MemoryBank.build(
        train.encoder_inputs,
        train.labels,
        encoder,
        label_names,
        public.encoder_inputs if public else None,
        public.labels if public else None,
    )
    features = encoder.encode_batched(samples.encoder_inputs)
    rewards = bank.reward(features, labels, weights=tuple(config.reward_weights), alpha=config.reward_alpha)
    thresholds = calibrate_thresholds(
        train.pixels,
        bank.features,
        train.labels,
        public_images=public.pixels if public else None,
        public_features=public_features,
        public_labels=public.labels if public else None,
        percentile=config.audit_percentile,
        criterion=config.memorization_criterion,
        source=config.threshold_source,
    )
    result = audit_images(samples.pixels, features, train.pixels, bank.features, thresholds)
    faces = detect_faces(samples.pixels)
    consistent = nearest_prototype(features, bank.features, bank.labels) == labels

    reference = None
    if "test" in data and len(data["test"]):
        test = _Images.from_split(data["test"], resolution, channels, encoder)
        test_features = encoder.encode_batched(test.encoder_inputs)
        test_result = audit_images(test.pixels, test_features, train.pixels, bank.features, thresholds)
        reference = {
            "num_images": len(test.labels),
            "memorization": memorization_rates(test_result, test.labels, label_names),
            "identity_consistency": identity_consistency(test_features, test.labels, bank.features, bank.labels),
            "face_detection_rate": detect_faces(test.pixels).float().mean().item(),
        }
    summary = {
        **run,
        "dataset": f"{config.dataset_name}/{config.dataset_config}",
        "num_samples": len(labels),
        "audit": {"thresholds": thresholds.to_dict(), "memorization": memorization_rates(result, labels, label_names)},
        "reference": reference,
        "identity_consistency": consistent.float().mean().item(),
        "face_detection_rate": faces.float().mean().item(),
        "reward": {term: rewards[term].mean().item() for term in ("sem", "cov", "exp", "total")},
        "reward_reference_spread": sorted(set(rewards["s_ref_source"])),
        "per_identity": _per_identity(
            {
                "memorized": result.memorized,
                "identity_consistent": consistent,
                "face_detected": faces,
                "reward": rewards["total"],
            },
            labels,
            label_names,
        ),
    }
    count = len(labels)
    dataset = datasets.Dataset.from_dict(
        {
            "image": rows["image"],
            "label": labels.tolist(),
            "identity": rows["identity"],
            "r_sem": rewards["sem"].tolist(),
            "r_cov": rewards["cov"].tolist(),
            "r_exp": rewards["exp"].tolist(),
            "reward": rewards["total"].tolist(),
            "nn_real_distance": result.pixel_distance.tolist(),
            "nn_real_feature_distance": result.feature_distance.tolist(),
            "memorized": result.memorized.tolist(),
            "face_detected": faces.tolist(),
            "seed": rows["seed"],
            "sample_id": rows["sample_id"],
            "generator_id": [run["generator_id"]] * count,
            "generator_revision": [run["generator_revision"]] * count,
        },
        features=dataset_features(label_feature),
    )
    return dataset, summary


def dataset_features(label: datasets.ClassLabel) -> datasets.Features:
    """The synthetic dataset's schema; ``label`` is the real data's own ``ClassLabel``."""
    number, flag, text = datasets.Value("float32"), datasets.Value("bool"), datasets.Value("string")
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": label,
            "identity": text,
            "r_sem": number,
            "r_cov": number,
            "r_exp": number,
            "reward": number,
            "nn_real_distance": number,
            "nn_real_feature_distance": number,
            "memorized": flag,
            "face_detected": flag,
            "seed": datasets.Value("int64"),
            "sample_id": datasets.Value("int64"),
            "generator_id": text,
            "generator_revision": text,
        }
    )


# -- the entry point ---------------------------------------------------------------------------------------------
def _resolve_identities(
    requested: list[str] | None, data_labels: list[str], generator_labels: list[str], adapter: str
) -> list[str]:
    """The identities to generate, each known to both the real data and the adapter."""
    identities = list(requested) if requested else list(data_labels)
    if len(set(identities)) != len(identities):
        raise ValueError(f"identities lists a name twice: {identities}")
    unknown = [name for name in identities if name not in data_labels]
    if unknown:
        raise ValueError(f"Identities {unknown} are not labels of the real data ({data_labels}).")
    missing = [name for name in identities if name not in generator_labels]
    if missing:
        raise ValueError(
            f"The adapter {adapter} cannot generate identities {missing}: its label space is {generator_labels}. "
            "Use the adapter trained on these identities (same dataset and config), or pass `identities` with names "
            "it knows."
        )
    return identities


def generate_synthetic_dataset(config: GenerationConfig, api: HfApi | None = None) -> tuple[datasets.Dataset, dict]:
    """Run the recipe (resuming an interrupted run in ``output_dir``); returns the dataset and its audit summary.

    ``api`` replaces the ``HfApi`` used to push (tests pass a recording stand-in).
    """
    torch.set_flush_denormal(True)
    output = Path(config.output_dir)
    _check_writable(output)
    adapter_folder = resolve_pretrained_folder(config.adapter, config.adapter_revision)
    adapter_config = read_adapter_config(adapter_folder) if (adapter_folder / ADAPTER_CONFIG).is_file() else {}
    shots = config.shots if config.shots is not None else adapter_config.get("shots")
    split_seed = config.split_seed if config.split_seed is not None else adapter_config.get("split_seed")
    if shots is None:
        logger.warning("Neither the config nor the adapter names the shots: the dataset's default split is audited.")
    options = {key: value for key, value in {"shots": shots, "seed": split_seed}.items() if value is not None}
    data = load_identity_dataset(
        config.dataset_name,
        config.dataset_config,
        data_dir=config.data_dir,
        cache_dir=config.dataset_cache_dir,
        **options,
    )
    generator = IdentityGenerator.from_pretrained(adapter_folder)
    identities = _resolve_identities(
        config.identities, data["train"].features["label"].names, generator.label_names, config.adapter
    )
    base = adapter_config.get("base_model")
    run = {
        "format": RUN_FORMAT,
        "generator_id": config.adapter,
        "generator_revision": folder_revision(adapter_folder),
        "base_revision": folder_revision(resolve_pretrained_folder(base, adapter_config.get("base_revision")))
        if base
        else None,
        "identities": identities,
        "samples_per_identity": config.samples_per_identity,
        "shard_size": config.shard_size,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "num_inference_steps": config.num_inference_steps,
        "guidance_scale": config.guidance_scale,
        "eta": config.eta,
    }
    _check_manifest(output, run)
    plan = SamplingPlan(tuple(identities), config.samples_per_identity, config.shard_size, config.seed)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _sample_shards(generator.to(device), plan, output / SHARDS_DIR, config)
    provenance = {**run, "shots": shots, "split_seed": split_seed}
    dataset, summary = _score(config, _read_shards(plan, output / SHARDS_DIR), data, provenance)
    card = _hub_card(config, summary)
    _write_outputs(dataset, card, summary, output)
    logger.info(
        "Wrote %d samples to %s: memorisation rate %s (held-out real floor %s)",
        len(dataset),
        output,
        _percent(summary["audit"]["memorization"]["rate"]),
        _percent(summary["reference"]["memorization"]["rate"]) if summary["reference"] else "n/a",
    )
    if config.push_to_hub:
        summary["hub_url"] = push_synthetic_dataset(
            output / HUB_DIR,
            config.hub_dataset_id,
            summary["audit"]["memorization"]["rate"],
            private=config.hub_private,
            max_memorization_rate=config.max_memorization_rate,
            force=config.force_push,
            api=api,
        )
    return dataset, summary
