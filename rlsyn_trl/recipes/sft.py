"""Cold start: adapt a class-conditional DiT to the target identities (zero-initialised identity embedders).

    accelerate launch recipes/sft.py --config recipes/orl_faces/sft.yaml [--max_steps 10 ...]

Reads the real split (``--streaming true``: as a stream, nothing built first), swaps fresh identity embedders into
the base DiT (+ LoRA), fits them with the denoising loss, and writes an identity adapter
(``IdentityGenerator.from_pretrained(output_dir)``) with its card, its provenance (the split and the fingerprints of
the images it saw) and a sample grid.
"""

from __future__ import annotations

import logging
import sys

from rlsyn_trl.generators import resolve_pretrained_folder
from rlsyn_trl.hub import check_push_possible, push_adapter
from rlsyn_trl.provenance import parent_reference, resolve_data_split, stage_record
from rlsyn_trl.recipes import parse_stage
from rlsyn_trl.trainers import ColdStartConfig, ColdStartTrainer, prepare_identity_generator
from rlsyn_trl.utils.refusals import run_reporting_refusals
from rlsyn_trl.utils.runtime import setup_runtime

logger = logging.getLogger(__name__)

CONFIG_CLASSES = (ColdStartConfig,)


def main(config: ColdStartConfig) -> dict:
    # 1. Seed, logging, precision.
    setup_runtime(config.seed, config.mixed_precision)
    if config.push_to_hub:
        check_push_possible(config.hub_model_id)

    # 2. Inputs: the real split (no input artefact to inherit it from) and the base model with fresh embedders.
    split = resolve_data_split(config)
    data = split.load(streaming=config.streaming)
    logger.info("Cold start on %s: %d real training images", split.describe(), len(data["train"]))
    generator = prepare_identity_generator(
        config.base_model, data["train"].features["label"].names, config.lora_config(), config.base_revision
    )

    # 3. Trainer, 4. train.
    trainer = ColdStartTrainer(generator, data["train"], config)
    trainer.train()

    # 5. Save the adapter with its card and provenance.
    provenance = stage_record(
        "cold_start",
        split.record(data),
        parent=parent_reference(config.base_model, resolve_pretrained_folder(config.base_model, config.base_revision)),
        training=config.denoising_settings(),
    )
    folder = trainer.save(provenance)

    # 6. Evaluate: a grid of samples per identity.
    trainer.sample_grid()

    # 7. Push (private unless hub_private is false).
    summary = {**trainer.summary(), "adapter": str(folder)}
    if config.push_to_hub and trainer.accelerator.is_main_process:
        summary["hub_url"] = push_adapter(folder, config.hub_model_id, private=config.hub_private)
    trainer.end()
    return summary


def cli(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """The command line of this stage (``argv``: default ``sys.argv[1:]``): parse, run, print the summary."""
    (config,) = parse_stage(CONFIG_CLASSES, argv, prog)
    summary = main(config)
    print(summary)
    return summary


if __name__ == "__main__":
    sys.exit(run_reporting_refusals(cli))
