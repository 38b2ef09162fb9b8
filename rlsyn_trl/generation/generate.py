"""The entry point: resolve the adapter, data and identities, then sample, score, write and publish a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from huggingface_hub import HfApi

from ..generators import IdentityGenerator, ReferenceStart, resolve_pretrained_folder
from ..generators.adapter import read_adapter_config
from ..hub import push_synthetic_dataset
from ..provenance import folder_revision, reward_record, write_provenance
from ..rewards import RewardOptions
from ..utils.model_sources import adapter_config_path
from .config import GenerationConfig
from .outputs import AUDIT_FILE, DATASET_DIR, HUB_DIR, _hub_card, _percent, _write_outputs
from .scoring import _score
from .shards import (
    RUN_FORMAT,
    SHARDS_DIR,
    SamplingPlan,
    _check_manifest,
    _check_writable,
    _read_shards,
    _sample_shards,
)

logger = logging.getLogger(__name__)


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


def write_synthetic_dataset(
    config: GenerationConfig,
    generator: IdentityGenerator,
    adapter_folder: Path,
    data: datasets.DatasetDict,
    phi: str,
    reward: RewardOptions,
    provenance: dict,
) -> tuple[datasets.Dataset, dict]:
    """Sample every missing shard (resuming an interrupted run in ``output_dir``), score the samples with ``reward``
    in the feature space of ``phi`` against ``data``'s training images, and write the dataset, its card, the audit and
    ``provenance``.

    The recipe (``recipes/generate.py``) resolves the adapter, its split and its reward; this block does the work.
    """
    output = Path(config.output_dir)
    _check_writable(output)
    identities = _resolve_identities(
        config.identities, data["train"].features["label"].names, generator.label_names, config.adapter
    )
    adapter_config = read_adapter_config(adapter_folder) if adapter_config_path(adapter_folder) else {}
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
    if config.guidance_interval is not None:  # absent when unset, as the reference strength: old runs keep theirs
        run["guidance_interval"] = config.guidance_interval
    if config.reference_strength is not None:  # absent when unset: runs from noise keep their fingerprints
        run["reference_strength"] = config.reference_strength
    # Every process samples its share of the shards (a shard's samples depend on its index alone, so the dataset is
    # the one a single process writes); the main process then scores and writes it, the others read it back.
    state = PartialState(cpu=config.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU"))
    if state.is_main_process:
        _check_manifest(output, run)
    state.wait_for_everyone()
    if not state.is_main_process:
        _check_manifest(output, run)
    plan = SamplingPlan(tuple(identities), config.samples_per_identity, config.shard_size, config.seed)
    device = config.device or state.device
    reference = ReferenceStart.from_split(data["train"], generator, config.reference_range())
    _sample_shards(
        generator.to(device), plan, output / SHARDS_DIR, config, reference, state.process_index, state.num_processes
    )
    state.wait_for_everyone()
    if state.is_main_process:
        scoring = (phi, reward)
        dataset, summary = _score_and_write(config, plan, data, scoring, provenance, {**run, "base_model": base})
    state.wait_for_everyone()
    if not state.is_main_process:
        dataset = datasets.load_from_disk(str(output / DATASET_DIR))
        summary = json.loads((output / AUDIT_FILE).read_text())
    return dataset, summary


def _score_and_write(
    config: GenerationConfig,
    plan: SamplingPlan,
    data: datasets.DatasetDict,
    scoring: tuple[str, RewardOptions],
    provenance: dict,
    run: dict,
) -> tuple[datasets.Dataset, dict]:
    """Score every shard's samples, write the dataset, its card, the audit and the provenance (main process)."""
    output = Path(config.output_dir)
    summary_run = {
        **run,
        "reference_strength": config.reference_strength,
        "shots": config.shots,
        "split_seed": config.split_seed,
        "reward_settings": reward_record(*scoring),
    }
    dataset, summary = _score(config, _read_shards(plan, output / SHARDS_DIR), data, summary_run, *scoring)
    card = _hub_card(config, summary)
    _write_outputs(dataset, card, summary, output)
    provenance = {**provenance, "audit": {"memorization_rate": summary["audit"]["memorization"]["rate"]}}
    for folder in (output, output / DATASET_DIR, output / HUB_DIR):
        write_provenance(folder, provenance)
    logger.info(
        "Wrote %d samples to %s: memorisation rate %s (held-out real floor %s)",
        len(dataset),
        output,
        _percent(summary["audit"]["memorization"]["rate"]),
        _percent(summary["reference"]["memorization"]["rate"]) if summary["reference"] else "n/a",
    )
    return dataset, summary


def push_dataset(config: GenerationConfig, summary: dict, api: HfApi | None = None) -> str:
    """Upload ``output_dir/hub`` to a private repo, refused above ``max_memorization_rate`` unless forced."""
    return push_synthetic_dataset(
        Path(config.output_dir) / HUB_DIR,
        config.hub_dataset_id,
        summary["audit"]["memorization"]["rate"],
        private=config.hub_private,
        max_memorization_rate=config.max_memorization_rate,
        force=config.force_push,
        api=api,
    )
