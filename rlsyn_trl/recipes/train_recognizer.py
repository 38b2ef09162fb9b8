"""Train the downstream identity recognizer on a real identity split, optionally with a synthetic set that dynamic
sample selection reweights, and report the benchmark's test metrics: identification accuracy on held-out real
images (ORL), mAP/CMC (Market-1501, CUHK03-NP), 10-fold verification accuracy (faces, `verification_sets`; RFW's
races, `rfw_races`, with their mean and spread).

    accelerate launch recipes/train_recognizer.py --config recipes/orl_faces/recognizer.yaml
    accelerate launch recipes/train_recognizer.py --config recipes/orl_faces/recognizer.yaml \
        --synthetic_dataset outputs/orl_faces/synthetic/dataset --selection true

The trained recognizer is saved in `output_dir` (model.safetensors, config.json, a model card with the test metrics
in its model-index, provenance.json): `AutoModel.from_pretrained(output_dir)` loads it after `import rlsyn_trl`, and
`--encoder output_dir` makes it the reward's and the audit's feature extractor. `--save_strategy steps --save_steps N`
writes checkpoints there and `--resume_from_checkpoint output_dir/checkpoint-N` continues from one;
`--push_to_hub true --hub_model_id owner/name` uploads the folder to a private repo (`--hub_private_repo false`:
public).

A synthetic dataset is accepted only when its provenance shows that its generator never saw one of this split's
evaluation images (a 2-shot adapter's second photo is a test photo of a 1-shot recognizer on the same seed).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from rlsyn_trl.cards import recognizer_card
from rlsyn_trl.data import check_identity_options, load_identity_dataset
from rlsyn_trl.data.face_verification import RFW_RACES
from rlsyn_trl.hub import check_push_possible, load_synthetic_dataset, push_model_folder
from rlsyn_trl.provenance import (
    check_no_leak,
    read_dataset_provenance,
    resolve_data_split,
    stage_record,
    write_provenance,
)
from rlsyn_trl.recipes import parse_stage
from rlsyn_trl.recognizer import TINY_MODEL, RecognizerConfig, train_recognizer
from rlsyn_trl.recognizer.evaluation import RFW_PREFIX
from rlsyn_trl.settings import DataSplitSettings, StreamingSettings, check_settings, require
from rlsyn_trl.utils.io import atomic_write_json, atomic_write_text
from rlsyn_trl.utils.refusals import run_reporting_refusals
from rlsyn_trl.utils.runtime import setup_runtime

logger = logging.getLogger(__name__)
RFW_CONFIGS = tuple(race.lower() for race in RFW_RACES)


@dataclass
class RecognizerScriptArguments(DataSplitSettings, StreamingSettings):
    """Which real split to train and evaluate on (unset fields: the dataset's defaults), whether it is streamed,
    and extra test sets."""

    verification_sets: list[str] = field(
        default_factory=list, metadata={"help": "Face verification pair sets to test on (lfw, agedb_30, ...)."}
    )
    verification_data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding the verification sets' .bin pair files."}
    )

    rfw_races: list[str] = field(
        default_factory=list,
        metadata={"help": f"RFW races to test on ({', '.join(RFW_CONFIGS)}; all: the four), each 10-fold, apart."},
    )
    rfw_data_dir: str | None = field(default=None, metadata={"help": "Folder holding RFW's test/ folder."})

    def __post_init__(self) -> None:
        check_settings(self)
        for name in self.verification_sets:  # a misspelt set fails now, not after the real data is built
            check_identity_options("face_verification", name)
        self.rfw_races = [race.lower() for race in self.rfw_races]
        if "all" in self.rfw_races:
            self.rfw_races = list(RFW_CONFIGS)
        for race in self.rfw_races:
            require(race in RFW_CONFIGS, "rfw_races", race, f"must be one of {', '.join(RFW_CONFIGS)} or all.")
        require(
            not self.rfw_races or self.rfw_data_dir is not None,
            "rfw_data_dir",
            self.rfw_data_dir,
            "RFW cannot be downloaded: pass the folder holding its test/ folder.",
        )

    def test_pair_sets(self) -> dict[str, datasets.Dataset]:
        """The face verification pair sets to test on: the insightface sets, then RFW's races (``rfw_<race>``)."""
        sets = {
            name: load_identity_dataset("face_verification", name, data_dir=self.verification_data_dir)["test"]
            for name in self.verification_sets
        }
        for race in self.rfw_races:
            sets[f"{RFW_PREFIX}{race}"] = load_identity_dataset("rfw", race, data_dir=self.rfw_data_dir)["test"]
        return sets


CONFIG_CLASSES = (RecognizerScriptArguments, RecognizerConfig)


def load_synthetic(path_or_id: str) -> datasets.Dataset:
    """A generation run's dataset: a ``save_to_disk`` folder, a Hub-layout folder or a Hub repo id."""
    folder = Path(path_or_id).expanduser()
    if (folder / "state.json").is_file():
        return datasets.load_from_disk(str(folder))
    if (folder / "dataset" / "state.json").is_file():
        return datasets.load_from_disk(str(folder / "dataset"))
    return load_synthetic_dataset(path_or_id)


def main(script_args: RecognizerScriptArguments, config: RecognizerConfig) -> dict:
    # 1. Seed, logging; a push needs its repo before hours of training.
    if config.push_to_hub and not config.hub_model_id:
        raise ValueError("--push_to_hub true needs the repo to push to: set --hub_model_id owner/name.")
    setup_runtime(config.seed)
    if config.push_to_hub:
        check_push_possible(config.hub_model_id)

    # 2. Inputs: the real split, the synthetic set (checked against the split's evaluation images), test pair sets.
    split = resolve_data_split(script_args)
    real = split.load(streaming=script_args.streaming)
    synthetic = synthetic_provenance = None
    if config.synthetic_dataset:
        synthetic_provenance = read_dataset_provenance(config.synthetic_dataset)
        check_no_leak(synthetic_provenance, real, split, f"The synthetic dataset {config.synthetic_dataset}")
        synthetic = load_synthetic(config.synthetic_dataset)
    verification = script_args.test_pair_sets()
    logger.info(
        "Recognizer on %s: %d real training images%s",
        split.describe(),
        len(real["train"]),
        f" + {len(synthetic)} synthetic" if synthetic is not None else "",
    )

    # 3.-4. Build the recognizer (and the selection callback) and train; evaluate on the held-out real images.
    metrics = train_recognizer(config, real, synthetic, verification, script_args.shuffle_buffer)

    # 5. Save the results, the card and the provenance beside the saved model; 6. push (private by default).
    if config.process_index == 0:
        output = Path(config.output_dir)
        atomic_write_json(output / "test_results.json", metrics)
        parent = {"id": config.synthetic_dataset, "provenance": synthetic_provenance} if synthetic is not None else None
        data_record = split.record(real)
        backbone = json.loads((output / "config.json").read_text())["backbone"].get("model_type", "unknown")
        write_provenance(
            output,
            stage_record(
                "recognizer",
                data_record,
                parent=parent,
                model={"start": config.model, "backbone": backbone},
                metrics=metrics,
            ),
        )
        pretrained = config.model != TINY_MODEL and not config.from_scratch
        card = recognizer_card(config, data_record, metrics, config.synthetic_dataset, backbone, pretrained)
        atomic_write_text(output / "README.md", card)
        if config.push_to_hub:
            metrics["hub_url"] = push_model_folder(
                output, config.hub_model_id, private=config.hub_private_repo is not False
            )
    return metrics


def cli(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """The command line of this stage (``argv``: default ``sys.argv[1:]``): parse, run, print the metrics."""
    script_args, config = parse_stage(CONFIG_CLASSES, argv, prog)
    metrics = main(script_args, config)
    print(metrics)
    return metrics


if __name__ == "__main__":
    sys.exit(run_reporting_refusals(cli))
