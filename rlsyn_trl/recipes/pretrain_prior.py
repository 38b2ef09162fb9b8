"""Stage 0: train the public priors (pixel DiT generator + identity feature extractor).

    accelerate launch recipes/pretrain_prior.py --config recipes/orl_faces/prior.yaml [--max_minutes 80 --resume true]

Reads the PUBLIC identities only (a private/target config is refused when the config is parsed), with
``--public_faces N`` also N synthetic faces of people who do not exist (phi's extra identities, the generator's null
class), trains the identity encoder and the generator, and writes ``encoder/`` and ``generator/`` under
``output_dir``, each with its provenance (the public split, the synthetic faces in ``data.public_data``, and the
fingerprints of the images it saw), so a cold start on
``--base_model <output_dir>/generator`` starts its provenance chain here. Then a sample grid and ``summary.json``
(which says whether ``max_minutes`` cut the generator short).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path

from accelerate import Accelerator

from rlsyn_trl.data import dataset_to_tensors
from rlsyn_trl.provenance import parent_reference, stage_record
from rlsyn_trl.recipes import parse_stage
from rlsyn_trl.trainers.priors import (
    ENCODER_DIR,
    GENERATOR_DIR,
    PriorConfig,
    evaluate_prior,
    resolve_prior_split,
    save_prior,
    start_generator,
    train_encoder,
    train_generator,
)
from rlsyn_trl.trainers.public_faces import load_public_faces, public_faces_record, with_face_identities
from rlsyn_trl.trainers.training import check_data_parallel
from rlsyn_trl.utils.io import atomic_write_json
from rlsyn_trl.utils.model_sources import resolve_pretrained_folder
from rlsyn_trl.utils.refusals import run_reporting_refusals
from rlsyn_trl.utils.runtime import claim_process_precision, setup_runtime
from rlsyn_trl.utils.tracking import build_trackers, end_trackers

logger = logging.getLogger(__name__)

CONFIG_CLASSES = (PriorConfig,)


def main(config: PriorConfig) -> dict:
    # 1. Seed, logging, precision; one accelerator for both phases.
    runtime = setup_runtime(config.seed, config.mixed_precision)
    check_data_parallel()
    trackers = build_trackers(config.log_with, "rlsyn_prior", Path(config.output_dir) / "logs")
    precision = claim_process_precision(runtime.mixed_precision)
    accelerator = Accelerator(mixed_precision=precision, log_with=trackers or None)
    check_data_parallel(accelerator.state)
    config.check_processes(accelerator.num_processes)
    accelerator.init_trackers("rlsyn_prior", config=config.tracker_config())
    output = Path(config.output_dir)

    # 2. Inputs: the public split (never a target identity) as tensors, and its provenance record.
    split = resolve_prior_split(config)
    data = split.load()
    label_names = data["train"].features["label"].names
    images, labels = dataset_to_tensors(data["train"], config.resolution, config.channels)
    data_record = split.record(data)
    logger.info("Priors on %s: %d identities, %d images", split.describe(), len(label_names), len(images))
    # A continued prior is checked against this split, and read as the generator's parent, before any training.
    start = parent = None
    if config.init_generator:  # PriorConfig refuses it with --train_generator false
        start = start_generator(config, label_names)
        parent = parent_reference(config.init_generator, resolve_pretrained_folder(config.init_generator))
    summary: dict = {"config": asdict(config), "data": split.describe(), "mixed_precision": runtime.mixed_precision}

    # 2b. Synthetic public faces (people who do not exist): phi's extra identities, the generator's null class.
    faces = load_public_faces(config)
    face_images = face_labels = None
    if faces is not None:
        face_images, face_labels = dataset_to_tensors(faces, config.resolution, config.channels)
        summary.update(public_faces=config.public_faces, public_face_images=len(face_images))
        logger.info("With %d synthetic public faces (%d images)", config.public_faces, len(face_images))

    def record_with_faces(used_as: str) -> dict:
        if faces is None:
            return data_record
        return {**data_record, "public_data": [public_faces_record(config, faces, used_as)]}

    # 3. Phase (b), the identity encoder: train, save with provenance.
    encoder = None
    if config.train_encoder:
        encoder_images, encoder_labels, num_classes = images, labels, len(label_names)
        if faces is not None:
            encoder_images, encoder_labels = with_face_identities(images, labels, num_classes, face_images, face_labels)
            num_classes += config.public_faces
        encoder = train_encoder(config, accelerator, encoder_images, encoder_labels, num_classes)
        summary["encoder_steps_done"] = encoder.steps
        if accelerator.is_main_process:
            record = record_with_faces("identities, one per face")
            save_prior(encoder, output / ENCODER_DIR, stage_record("prior", record, model="encoder"))

    # 4. Phase (a), the generator: train (max_minutes may cut it short), save with provenance.
    generator = None
    if config.train_generator:
        generator = train_generator(config, accelerator, images, labels, label_names, face_images, start)
        summary.update(
            generator_steps_done=generator.steps,
            generator_steps=config.generator_steps,
            generator_stopped_by_time_budget=generator.stopped_by_time_budget,
        )
        if accelerator.is_main_process:
            lfw = "skimage lfw_subset (100 crops)" if config.use_lfw_faces else None
            record = record_with_faces("null-class (unconditional) images")
            provenance = stage_record("prior", record, parent, model="generator", steps=generator.steps, null_class=lfw)
            save_prior(generator, output / GENERATOR_DIR, provenance)

    # 5. Evaluate: sample grid, face detection, self-consistency under the new encoder.
    if generator is not None and accelerator.is_main_process:
        encoder_model = encoder.model if encoder is not None else None
        summary.update(evaluate_prior(config, generator.model, encoder_model, images, labels))

    # 6. Summary.
    if accelerator.is_main_process:
        atomic_write_json(output / "summary.json", summary)
    accelerator.wait_for_everyone()
    end_trackers(accelerator)
    return summary


def cli(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """The command line of this stage (``argv``: default ``sys.argv[1:]``): parse, run, print the summary."""
    (config,) = parse_stage(CONFIG_CLASSES, argv, prog)
    summary = main(config)
    print(summary)
    return summary


if __name__ == "__main__":
    sys.exit(run_reporting_refusals(cli))
