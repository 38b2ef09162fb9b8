"""Stage 0 for a benchmark with no encoder: train the identity feature extractor phi on PUBLIC identities only.

    accelerate launch recipes/pretrain_encoder.py --config recipes/casia_webface/encoder.yaml \
        --data_dir /path/to/CASIA-WebFace

``dataset_*`` names the data phi trains on and ``target_*`` the private split it must never see: the two splits'
identities are compared from the builders' folder listings before any image is read, and a shared identity is
refused (CASIA-WebFace drops the subset's identities with ``exclude_target_identities``; a ReID target trains on
another benchmark's training split). ``--public_faces N`` adds N synthetic faces of people who do not exist
(``synthetic_faces``), each its own identity. Images are decoded per step through a ``datasets`` transform
(``--streaming true``: read as a stream from where they are kept, nothing built first). Writes
the encoder folder (``output_dir``: weights and config, ``README.md`` card, ``provenance.json`` with the split, the
target, the synthetic faces (``data.public_data``) and the training images' fingerprints) that ``--encoder`` of the
DDPO and generation recipes loads, and ``summary.json``; ``--resume true`` continues from the newest checkpoint
under ``output_dir/checkpoints``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path

from accelerate import Accelerator

from rlsyn_trl.provenance import stage_record
from rlsyn_trl.recipes import parse_stage
from rlsyn_trl.trainers.encoder_pretraining import (
    EncoderPretrainConfig,
    encoder_card,
    public_train_split,
    resolve_public_identities,
    streamed_batches,
    target_record,
)
from rlsyn_trl.trainers.priors import TrainedPrior, save_prior, train_encoder_on_batches
from rlsyn_trl.trainers.public_faces import load_public_faces, public_faces_record, with_public_faces
from rlsyn_trl.trainers.training import check_data_parallel
from rlsyn_trl.utils.io import atomic_write_json, atomic_write_text
from rlsyn_trl.utils.refusals import run_reporting_refusals
from rlsyn_trl.utils.runtime import claim_process_precision, setup_runtime
from rlsyn_trl.utils.tracking import end_trackers

logger = logging.getLogger(__name__)

CONFIG_CLASSES = (EncoderPretrainConfig,)


def main(config: EncoderPretrainConfig) -> dict:
    # 1. Seed, logging, precision; data parallel (DDP) launches only.
    runtime = setup_runtime(config.seed, config.mixed_precision)
    check_data_parallel()
    accelerator = Accelerator(mixed_precision=claim_process_precision(runtime.mixed_precision))
    output = Path(config.output_dir)

    # 2. Which identities phi may see: refused here, before any image is read, if the target's are among them.
    identities = resolve_public_identities(config)

    # 3. Inputs: the public training split, then any synthetic public faces, each face one more identity (images
    # stay on disk; each step decodes its own batch).
    data = identities.split.load(streaming=config.streaming)
    train, relabel = public_train_split(data, identities)
    faces = load_public_faces(config)
    real, num_classes, num_real = train, len(identities.kept), len(train)
    if faces is not None:
        train, relabel = with_public_faces(train, relabel, faces)
        num_classes += config.public_faces
    logger.info(
        "Encoder on %s: %d identities, %d images%s (target %s never seen%s)",
        identities.split.describe(),
        len(identities.kept),
        num_real,
        f", and {config.public_faces} synthetic faces ({len(faces)} images)" if faces is not None else "",
        identities.target.describe(),
        f"; {len(identities.excluded)} of its identities dropped" if identities.excluded else "",
    )
    batches = streamed_batches(
        train, relabel, config, config.seed + 1, accelerator.process_index, accelerator.num_processes
    )

    # 4. Train (the priors' encoder loop: CosFace head, checkpoints, resume).
    trained: TrainedPrior = train_encoder_on_batches(config, accelerator, batches, num_classes)

    # 5. Save: weights + config, provenance (public split, target, fingerprints), card, summary.
    summary = {
        "config": asdict(config),
        "data": identities.split.describe(),
        "target": identities.target.describe(),
        "num_identities": len(identities.kept),
        "num_images": num_real,
        "public_faces": config.public_faces,
        "public_face_images": len(train) - num_real,
        "excluded_identities": len(identities.excluded),
        "steps_done": trained.steps,
    }
    if accelerator.is_main_process:
        record = identities.split.record({"train": real})
        record["identities"] = identities.kept
        if faces is not None:
            record["public_data"] = [public_faces_record(config, faces, "identities, one per face")]
        provenance = stage_record("encoder", record, model="encoder", target=target_record(identities))
        save_prior(trained, output, provenance)
        card = encoder_card(config, trained.model, identities, num_real, trained.steps, len(train) - num_real)
        atomic_write_text(output / "README.md", card)
        atomic_write_json(output / "summary.json", summary)
    accelerator.wait_for_everyone()
    end_trackers(accelerator)
    return summary


def cli(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """The command line of this stage (``argv``: default ``sys.argv[1:]``): parse, run, print the summary."""
    (config,) = parse_stage(CONFIG_CLASSES, argv, prog)
    summary = main(config)
    print({key: value for key, value in summary.items() if key != "config"})
    return summary


if __name__ == "__main__":
    sys.exit(run_reporting_refusals(cli))
