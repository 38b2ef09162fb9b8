"""Downstream accuracy of a finished main job's synthetic sets over recognizer training seeds.

    python benchmarks/synthetic_mixing.py --run outputs/main [--seeds 0 1 2] [--steps 300]

Reuses the real split and the synthetic datasets of a main job (``rlsyn-trl main --output-dir <run>``) and retrains
the recognizer per training seed for: real + augmentation, cold-start synthetic (+ selection), RL synthetic
(+ selection), and RL synthetic at a quarter of each batch. The generator is fixed, so the spread is the
recognizer's own; the split-seed spread is ``benchmarks/ablation.py``'s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import numpy as np
import torch

from rlsyn_trl.data import load_identity_dataset
from rlsyn_trl.pipeline import recognizer_config, set_offline_defaults
from rlsyn_trl.recognizer import TINY_MODEL, train_recognizer
from rlsyn_trl.training import fresh_accelerator_state

VARIANTS = [
    ("real + augmentation", None, {}),
    ("+ cold-start synthetic", "cold_start", {}),
    ("+ cold-start synthetic + selection", "cold_start", {"selection": True}),
    ("+ RL synthetic + selection (full method)", "rl", {"selection": True}),
    ("+ RL synthetic, a quarter of each batch", "rl", {"synthetic_ratio": 0.25}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="outputs/main", help="a finished main job's output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--model", default=None, help="recognizer start (default: the main job's recognizer_model)")
    parser.add_argument("--tag", default="", help="suffix of the mixing output folders")
    args = parser.parse_args()
    set_offline_defaults()
    torch.set_flush_denormal(True)
    run = Path(args.run)
    results = json.loads((run / "results.json").read_text())
    job = results["config"]
    model = args.model or results.get("recognizer_model", TINY_MODEL)
    real = load_identity_dataset("orl_faces", "private", shots=job["shots"], seed=job["split_seed"])
    synthetic = {
        name: datasets.load_from_disk(str(run / f"synthetic_{name}" / "dataset")) for name in ("cold_start", "rl")
    }
    print(
        f"{run}: {job['shots']} shot(s), split seed {job['split_seed']}; "
        f"training seeds {args.seeds}, {args.steps} steps, recognizer {model}"
    )
    print("\n| recognizer data | test accuracy % (mean +- std) | per seed |\n|---|---|---|")
    for name, source, overrides in VARIANTS:
        accuracies = []
        for seed in args.seeds:
            fresh_accelerator_state()
            config = recognizer_config(
                run / f"mixing{args.tag}" / f"{name.replace(' ', '_')}_{seed}",
                model,
                args.steps,
                seed,
                **overrides,
            )
            accuracies.append(
                100 * train_recognizer(config, real, synthetic[source] if source else None)["test_accuracy"]
            )
        per_seed = " / ".join(f"{a:.1f}" for a in accuracies)
        print(f"| {name} | {np.mean(accuracies):.1f} +- {np.std(accuracies):.1f} | {per_seed} |", flush=True)


if __name__ == "__main__":
    main()
