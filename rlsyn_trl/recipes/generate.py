"""Generate a scored, audited synthetic identity dataset from an identity adapter (cold start or DDPO).

    accelerate launch recipes/generate.py --config recipes/orl_faces/generate.yaml [--adapter outputs/orl_faces/ddpo]

The real split, and for a DDPO policy the reward it was trained with (phi and the reward's constants), are read from
the adapter's provenance: the samples are audited against the very images the adapter saw and scored with the
trained reward; a contradicting setting is refused. Writes ``output_dir/dataset`` (``load_from_disk``),
``output_dir/hub`` (the Hub layout, with its card) and the run's provenance; a killed run resumes from its shards.
Launched on N processes (GPUs), each samples every N-th shard and the main process scores and writes the dataset.
"""

from __future__ import annotations

import logging
import sys

import datasets
from huggingface_hub import HfApi

from rlsyn_trl.encoders import describe_feature_extractor
from rlsyn_trl.generation import GenerationConfig, push_dataset, write_synthetic_dataset
from rlsyn_trl.generation.evaluator import check_independent_evaluator
from rlsyn_trl.generators import IdentityGenerator, resolve_pretrained_folder
from rlsyn_trl.hub import check_push_possible
from rlsyn_trl.provenance import (
    inherit_settings,
    load_input_split,
    parent_reference,
    read_reward,
    reward_record,
    stage_record,
)
from rlsyn_trl.recipes import parse_stage
from rlsyn_trl.settings import REWARD_FIELDS
from rlsyn_trl.utils.refusals import run_reporting_refusals
from rlsyn_trl.utils.runtime import setup_runtime

logger = logging.getLogger(__name__)

CONFIG_CLASSES = (GenerationConfig,)
SPLIT_FIELDS = (
    "dataset_name",
    "dataset_config",
    "shots",
    "split_seed",
    "dataset_revision",
    "image_column",
    "label_column",
)


def main(config: GenerationConfig, api: HfApi | None = None) -> tuple[datasets.Dataset, dict]:
    """``api`` replaces the ``HfApi`` used to push (tests pass a recording stand-in)."""
    # 1. Seed, logging.
    setup_runtime(config.seed)
    if config.push_to_hub:
        check_push_possible(config.hub_dataset_id, "hub_dataset_id", api)

    # 2. Inputs: the adapter, the split it was trained on, the reward it was trained with (a DDPO policy).
    adapter = resolve_pretrained_folder(config.adapter, config.adapter_revision)
    source = f"the adapter {config.adapter}"
    policy, split, data, data_record = load_input_split(config, adapter, source, config.dataset_cache_dir)
    trained = inherit_settings(config, policy.get("reward") or {}, {"encoder": "encoder", **REWARD_FIELDS}, source)
    phi, reward = read_reward(trained)
    check_independent_evaluator(config.evaluator, config.evaluator_revision, phi, config.encoder_revision)
    generator = IdentityGenerator.from_pretrained(adapter)
    trained_from = (policy.get("sampler") or {}).get("reference_strength")
    if trained_from is not None and config.reference_strength != trained_from:
        logger.warning(
            "The policy %s was trained on chains started from real images at reference_strength %s, but this run "
            "samples with reference_strength %s: its samples come from chains the policy was not trained on.",
            config.adapter,
            trained_from,
            config.reference_strength,
        )
    logger.info("Generating from %s (%s) on %s", config.adapter, policy["stage"], split.describe())

    # 3.-5. Sample, score with the trained reward, audit, and write the dataset with its card and provenance.
    provenance = stage_record(
        "generation",
        data_record,
        parent=parent_reference(config.adapter, adapter),
        reward=reward_record(phi, reward),
        phi=describe_feature_extractor(phi, config.encoder_revision),
        sampler=config.sampler_options(),
        samples_per_identity=config.samples_per_identity,
        seed=config.seed,
        evaluator=None if config.evaluator is None else {"id": config.evaluator, "revision": config.evaluator_revision},
    )
    dataset, summary = write_synthetic_dataset(config, generator, adapter, data, phi, reward, provenance)

    # 6. Push (private unless hub_private is false; refused above max_memorization_rate unless forced).
    if config.push_to_hub:
        summary["hub_url"] = push_dataset(config, summary, api)
    return dataset, summary


def cli(argv: list[str] | None = None, prog: str | None = None) -> tuple[datasets.Dataset, dict]:
    """The command line of this stage (``argv``: default ``sys.argv[1:]``): parse, run, print the summary."""
    (config,) = parse_stage(CONFIG_CLASSES, argv, prog)
    dataset, summary = main(config)
    audit = summary["audit"]["memorization"]
    floor = summary["reference"]["memorization"]["rate"] if summary["reference"] else None
    print(f"{len(dataset)} samples in {config.output_dir}; memorisation rate {audit['rate']:.1%}", end="")
    print(f" (held-out real floor {floor:.1%})" if floor is not None else "")
    return dataset, summary


if __name__ == "__main__":
    sys.exit(run_reporting_refusals(cli))
