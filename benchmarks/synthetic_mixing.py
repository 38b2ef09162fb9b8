"""Downstream accuracy of finished main jobs' synthetic sets under several ways of mixing them in.

    python benchmarks/synthetic_mixing.py --run outputs/benchmarks/ablation/1shot_seed{0,1,2}
    python benchmarks/synthetic_mixing.py --run outputs/main --seeds 0 1 2

Reuses the real split and the synthetic datasets of each main job (``rlsyn-trl main --output-dir <run>`` or an
ablation run) and retrains the recognizer for: real only, real + augmentation, cold-start synthetic (+ selection),
RL synthetic + selection (the full method), and the full method with a smaller synthetic share of each batch,
with synthetic images in the first half of training only, with their loss kept off the backbone (class centres
only), or kept off the class centres (backbone only: the centres are placed by the real images). ``--only`` runs
the rows whose name holds one of its words (a ``--main-only`` run has no cold-start set); ``--sets`` adds a row for
each named synthetic set of the runs (e.g. a reference-guided ``cold_start_s0.5``). Training seeds:
``--seeds``, or each run's own seed (the ablation's convention, seed = split seed). Means and stds are over all
(run, seed) pairs. The thread count changes single runs by a few points, so it is fixed (``--threads``, default 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import numpy as np

from rlsyn_trl.data import load_identity_dataset
from rlsyn_trl.job.comparison import NO_AUGMENTATION, paired_gain, recognizer_config
from rlsyn_trl.recognizer import TINY_MODEL, train_recognizer
from rlsyn_trl.utils.runtime import setup_runtime

FULL = {"selection": True}
BASELINE = "real + augmentation"
VARIANTS = [
    ("real only", None, NO_AUGMENTATION),
    (BASELINE, None, {}),
    ("+ cold-start synthetic", "cold_start", {}),
    ("+ cold-start synthetic + selection", "cold_start", FULL),
    ("+ RL synthetic + selection (full method)", "rl", FULL),
    ("full method, 1/5 of each batch synthetic", "rl", {**FULL, "synthetic_ratio": 0.2}),
    ("full method, 1/10 of each batch synthetic", "rl", {**FULL, "synthetic_ratio": 0.1}),
    ("full method, synthetic in the first half of training only", "rl", {**FULL, "synthetic_until": 0.5}),
    ("full method, synthetic loss kept off the backbone", "rl", {**FULL, "synthetic_trains_backbone": False}),
    ("full method, class centres placed by real images only", "rl", {**FULL, "synthetic_moves_centres": False}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", default=["outputs/main"], help="finished main jobs' output folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default: each run's)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="recognizer start (default: each main job's recognizer_model)")
    parser.add_argument("--tag", default="", help="suffix of the mixing output folders")
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only the rows whose name contains one of these (none: no row)"
    )
    parser.add_argument(
        "--sets", nargs="+", default=[], help="add a row per synthetic set of the runs (e.g. cold_start_s0.5)"
    )
    args = parser.parse_args()
    setup_runtime(threads=args.threads, offline=True)  # every run seeds itself
    jobs = []
    for run in map(Path, args.run):
        results = json.loads((run / "results.json").read_text())
        job = results["config"]
        model = args.model or results.get("recognizer_model", TINY_MODEL)
        real = load_identity_dataset("orl_faces", "private", shots=job["shots"], seed=job["split_seed"])
        synthetic = {  # every set of the run (a --main-only run has no cold-start set)
            folder.name.removeprefix("synthetic_"): datasets.load_from_disk(str(folder / "dataset"))
            for folder in sorted(run.glob("synthetic_*"))
        }
        seeds = args.seeds if args.seeds is not None else [job["seed"]]
        jobs.append((run, real, synthetic, model, seeds))
        print(f"{run}: {job['shots']} shot(s), split seed {job['split_seed']}, training seeds {seeds}, {model}")
    print(f"{args.steps} steps, {args.threads} thread(s)")
    print("\n| recognizer data | test accuracy % (mean +- std) | per run and seed |\n|---|---|---|")
    variants = [v for v in VARIANTS if args.only is None or any(part in v[0] for part in args.only)]
    variants += [(f"+ {name} synthetic", name, {}) for name in args.sets]
    table = {}
    for name, source, overrides in variants:
        accuracies = table[name] = []
        for run, real, synthetic, model, seeds in jobs:
            for seed in seeds:
                folder = run / f"mixing{args.tag}" / f"{name.replace(' ', '_').replace('/', '-')}_{seed}"
                config = recognizer_config(folder, model, args.steps, seed, **overrides)
                metrics = train_recognizer(config, real, synthetic[source] if source else None)
                accuracies.append(100 * metrics["test_accuracy"])
        per_seed = " / ".join(f"{a:.1f}" for a in accuracies)
        print(f"| {name} | {np.mean(accuracies):.1f} +- {np.std(accuracies):.1f} | {per_seed} |", flush=True)
    if BASELINE in table and len(table[BASELINE]) > 1:
        print(paired_gains(table))


def paired_gains(table: dict[str, list[float]]) -> str:
    """Each row's gain over real + augmentation on the same (run, seed), with the standard error of its mean."""
    header = f"\n| recognizer data | gain over {BASELINE}, mean +- standard error | per run and seed |"
    lines = [header, "|---|---|---|"]
    for name, accuracies in table.items():
        if name == BASELINE:
            continue
        gain, error = paired_gain(accuracies, table[BASELINE])
        gains = " / ".join(f"{a - b:+.1f}" for a, b in zip(accuracies, table[BASELINE], strict=True))
        lines.append(f"| {name} | {gain:+.1f} +- {error:.1f} | {gains} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
