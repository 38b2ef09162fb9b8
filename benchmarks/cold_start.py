"""Identity consistency of cold-start samples on the private ORL identities.

    python benchmarks/cold_start.py --shots 2 --seeds 0 1 2

For each split seed: run the SFT recipe (recipes/orl_faces/sft.yaml settings), sample ``--per-identity`` images
per identity, and measure the fraction whose nearest real-identity prototype (mean encoder feature of the k
train shots) is their own identity. Baselines on the same test: the untuned prior with a random identity
assignment (chance is 1/20), and the real held-out test photos. The face-detection rate (realism) sits beside.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset
from rlsyn_trl.encoders import load_encoder
from rlsyn_trl.generation.realism import face_detection_rate
from rlsyn_trl.generators import IdentityGenerator
from rlsyn_trl.metrics.identity import identity_consistency
from rlsyn_trl.recipes import sft
from rlsyn_trl.trainers import ColdStartConfig
from rlsyn_trl.utils.runtime import setup_runtime
from rlsyn_trl.utils.visualization import save_image_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="recipes/orl_faces/sft.yaml")
    parser.add_argument("--encoder", default="embedded:orl_faces/encoder")
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-identity", type=int, default=10)
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--output-dir", default="outputs/benchmarks/cold_start")
    args = parser.parse_args()
    setup_runtime(offline=True)  # the SFT recipe seeds each run with its split seed
    encoder = load_encoder(args.encoder)
    settings = yaml.safe_load(Path(args.config).read_text())
    results = {"cold_start": [], "prior_random_assignment": [], "real_held_out": [], "realism_cold_start": []}
    results["realism_real"] = []
    for seed in args.seeds:
        data = load_identity_dataset("orl_faces", "private", shots=args.shots, seed=seed)
        train, train_labels = dataset_to_tensors(data["train"], encoder.config.image_size)
        test, test_labels = dataset_to_tensors(data["test"], encoder.config.image_size)
        bank = encoder.encode_batched(train)
        config = ColdStartConfig(
            **{
                **settings,
                "shots": args.shots,
                "split_seed": seed,
                "seed": seed,
                "output_dir": f"{args.output_dir}/seed{seed}",
                "num_inference_steps": args.inference_steps,
            }
        )
        generator = IdentityGenerator.from_pretrained(sft.main(config)["adapter"])
        labels = torch.arange(generator.num_classes).repeat_interleave(args.per_identity)
        samples = generator.sample(labels, seed=seed, num_inference_steps=args.inference_steps)
        save_image_grid(samples, f"{args.output_dir}/seed{seed}/grid.png", nrow=args.per_identity)
        results["cold_start"].append(identity_consistency(encoder.encode_batched(samples), labels, bank, train_labels))
        results["realism_cold_start"].append(face_detection_rate(samples))
        prior = IdentityGenerator.from_pretrained(settings["base_model"])
        prior_labels = torch.randint(
            0, prior.num_classes, (len(labels),), generator=torch.Generator().manual_seed(seed)
        )
        prior_samples = prior.sample(prior_labels, seed=seed, num_inference_steps=args.inference_steps)
        results["prior_random_assignment"].append(
            identity_consistency(encoder.encode_batched(prior_samples), labels, bank, train_labels)
        )
        results["real_held_out"].append(
            identity_consistency(encoder.encode_batched(test), test_labels, bank, train_labels)
        )
        results["realism_real"].append(face_detection_rate(test))
        print(json.dumps({k: v[-1] for k, v in results.items()}))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    Path(args.output_dir, "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nPrivate ORL, {args.shots} shots, split seeds {args.seeds}, {args.per_identity} samples/identity\n")
    print("| images | identity consistency | face detected |")
    print("|---|---|---|")
    rows = [
        ("untuned prior, random identity", "prior_random_assignment", None),
        ("cold start (sft.yaml)", "cold_start", "realism_cold_start"),
        ("real held-out photos", "real_held_out", "realism_real"),
    ]
    for name, key, realism in rows:
        cell = lambda k: f"{100 * np.mean(results[k]):.1f} +- {100 * np.std(results[k]):.1f}"  # noqa: E731
        print(f"| {name} | {cell(key)} | {cell(realism) if realism else '-'} |")


if __name__ == "__main__":
    main()
