"""Train the downstream identity recognizer on an identity benchmark, optionally with a synthetic set that dynamic
sample selection reweights, and report the benchmark's test metrics: identification accuracy on held-out real
images (ORL), mAP/CMC (Market-1501, CUHK03-NP), 10-fold verification accuracy (faces, `verification_sets`).

    python recipes/train_recognizer.py --config recipes/orl_faces/recognizer.yaml
    python recipes/train_recognizer.py --config recipes/orl_faces/recognizer.yaml \
        --synthetic_dataset outputs/synthetic --selection true --scored_dataset_path outputs/synthetic_scored
    accelerate launch recipes/train_recognizer.py --config recipes/market1501/recognizer.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from rlsyn_trl.data import check_identity_options, load_identity_dataset
from rlsyn_trl.recognizer import RecognizerConfig, train_recognizer


@dataclass
class ScriptArguments:
    """Which real benchmark split to train and evaluate on."""

    dataset_name: str = field(default="orl_faces", metadata={"help": "A registered identity benchmark."})
    dataset_config: str = field(default="private", metadata={"help": "Its configuration (ORL: the private half)."})
    shots: int | None = field(default=1, metadata={"help": "Real training images per identity; None: all."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/test split of each identity's images."})
    data_dir: str | None = field(default=None, metadata={"help": "Local copy of the benchmark's files, if any."})
    verification_sets: list[str] = field(
        default_factory=list, metadata={"help": "Face verification pair sets to test on (lfw, agedb_30, ...)."}
    )
    verification_data_dir: str | None = field(
        default=None, metadata={"help": "Folder holding the verification sets' .bin pair files."}
    )


def main() -> None:
    torch.set_flush_denormal(True)  # denormals made CPU training about 50x slower on the project's machines
    script_args, config = TrlParser((ScriptArguments, RecognizerConfig)).parse_args_and_config()
    for name in script_args.verification_sets:  # a misspelt set fails now, not after the real data is built
        check_identity_options("face_verification", name)
    real = load_identity_dataset(
        script_args.dataset_name,
        script_args.dataset_config,
        data_dir=script_args.data_dir,
        shots=script_args.shots,
        seed=script_args.split_seed,
    )
    verification = {
        name: load_identity_dataset("face_verification", name, data_dir=script_args.verification_data_dir)["test"]
        for name in script_args.verification_sets
    }
    metrics = train_recognizer(config, real, verification=verification)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(config.output_dir) / "test_results.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
