"""Reward-guided RL (DDPO) of a cold-start identity adapter with the composite identity reward.

    accelerate launch recipes/ddpo.py --config recipes/orl_faces/ddpo.yaml [--adapter outputs/orl_faces/sft ...]

The split is read from the adapter's provenance (the images it was trained on form the reward's memory bank and the
denoising anchor's data; a contradicting --shots or --split_seed is refused), the adapter becomes a DDPO pipeline,
and `RLSynDDPOTrainer` (TRL's `DDPOTrainer`, subclassed) trains it on identity groups. The RL adapter is written
with its card and provenance (the reward and sampler it was trained with, which generation then uses).

Two CPU processes: accelerate 1.15's `accelerate launch --cpu --num_processes 2` starts a single process, so use
ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 recipes/ddpo.py --config ...
"""

from __future__ import annotations

import logging
import sys

from rlsyn_trl.encoders import describe_feature_extractor, load_feature_extractor
from rlsyn_trl.generation.evaluator import check_independent_evaluator
from rlsyn_trl.generators import IdentityGenerator, resolve_pretrained_folder
from rlsyn_trl.hub import check_push_possible
from rlsyn_trl.provenance import load_input_split, parent_reference, reward_record, stage_record
from rlsyn_trl.recipes import parse_stage
from rlsyn_trl.rewards import IdentityReward
from rlsyn_trl.rewards.identity_reward import needs_public_spread
from rlsyn_trl.trainers import RLSynDDPOConfig, RLSynDDPOTrainer
from rlsyn_trl.trainers.ddpo.config import process_state
from rlsyn_trl.trainers.ddpo.data import check_same_identities, identity_tensors
from rlsyn_trl.trainers.ddpo.evaluation import evaluate_policies, evaluation_table
from rlsyn_trl.trainers.ddpo.pipeline import IdentityDDPOPipeline
from rlsyn_trl.utils.io import atomic_write_json, atomic_write_text
from rlsyn_trl.utils.refusals import run_reporting_refusals
from rlsyn_trl.utils.runtime import setup_runtime
from rlsyn_trl.utils.tracking import end_trackers

logger = logging.getLogger(__name__)

CONFIG_CLASSES = (RLSynDDPOConfig,)


def main(config: RLSynDDPOConfig) -> dict:
    # 1. Seed, logging, precision; an evaluator that is phi is refused before any work.
    setup_runtime(config.seed, config.mixed_precision)
    if config.push_to_hub:
        check_push_possible(config.hub_model_id)
    check_independent_evaluator(config.evaluator, config.evaluator_revision, config.encoder)

    # 2. Inputs: the cold-start adapter, the split it was trained on, phi and the memory bank of the reward.
    adapter = resolve_pretrained_folder(config.adapter, config.adapter_revision)
    source = f"the adapter {config.adapter}"
    cold_start, split, data, data_record = load_input_split(config, adapter, source)
    pipeline = IdentityDDPOPipeline.from_pretrained(str(adapter), lora_config=config.lora_config())
    check_same_identities(pipeline.generator, data["train"], source)
    images, labels = identity_tensors(data["train"], pipeline.generator)
    public = None
    if needs_public_spread(labels) and config.public_dataset_config:
        public = identity_tensors(split.load_public(config.public_dataset_config, data["train"]), pipeline.generator)
    phi = load_feature_extractor(config.encoder).to(process_state(config).device)  # the bank is encoded there, once
    reward = IdentityReward.build(phi, images, labels, pipeline.generator.label_names, public, config.reward_options())
    logger.info("DDPO on %s from %s: %d real images in the memory bank", split.describe(), config.adapter, len(images))

    # 3. Trainer: the pipeline, the reward and the real images; the anchor uses the cold start's own settings.
    trainer = RLSynDDPOTrainer(config, pipeline, reward, (images, labels), denoising=cold_start.get("training"))

    # 4. Train.
    history = trainer.train()

    # 5. Save the RL adapter with its card and provenance.
    provenance = stage_record(
        "ddpo",
        data_record,
        parent=parent_reference(config.adapter, adapter),
        training=trainer.denoising,
        reward=reward_record(config.encoder, reward.options),
        phi=describe_feature_extractor(config.encoder),
        sampler={
            "num_inference_steps": config.sample_num_steps,
            "guidance_scale": config.sample_guidance_scale,
            "eta": config.sample_eta,
            **({} if config.reference_strength is None else {"reference_strength": config.reference_strength}),
        },
        epochs=trainer.first_epoch,
    )
    folder = trainer.save_pretrained(provenance=provenance)
    summary = {
        "epochs": trainer.first_epoch,
        "stopped_by_time_budget": trainer.first_epoch < config.num_epochs,
        "adapter": str(folder),
        "last_epoch": history[-1] if history else {},
    }

    # 6. Evaluate: cold start against RL on fresh samples with the same seeds.
    if config.eval_seeds and trainer.accelerator.is_main_process:
        cold = IdentityGenerator.from_pretrained(adapter).to(trainer.accelerator.device)
        evaluation = evaluate_policies(
            {"cold start": cold, "DDPO": trainer.sd_pipeline.generator},
            trainer.reward,
            config.eval_seeds,
            config.eval_samples_per_identity,
            config.sample_num_steps,
            config.sample_guidance_scale,
            config.sample_eta,
            reference=trainer.reference_start,
            evaluator=None
            if config.evaluator is None
            else (load_feature_extractor(config.evaluator, config.evaluator_revision), images, labels),
        )
        summary["evaluation"] = evaluation
        atomic_write_json(folder / "evaluation.json", evaluation)
        atomic_write_text(folder / "evaluation.md", evaluation_table(evaluation) + "\n")
        trainer.evaluation = evaluation  # the card's model-index reports these measured results
        atomic_write_text(folder / "README.md", trainer.model_card())
    trainer.accelerator.wait_for_everyone()

    # 7. Push (private unless hub_private is false).
    if config.push_to_hub:
        summary["hub_url"] = trainer.push_to_hub()
    end_trackers(trainer.accelerator)
    return summary


def cli(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """The command line of this stage (``argv``: default ``sys.argv[1:]``): parse, run, print the summary."""
    (config,) = parse_stage(CONFIG_CLASSES, argv, prog)
    summary = main(config)
    print({key: value for key, value in summary.items() if key != "last_epoch"})
    return summary


if __name__ == "__main__":
    sys.exit(run_reporting_refusals(cli))
