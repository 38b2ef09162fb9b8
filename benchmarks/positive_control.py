"""Positive control of the downstream pipeline (METHOD.md, "Recommended control"): real extra data must help.

For each ORL private split (k shots, split seed s), each identity's held-out images are cut in two halves: the
POOL half plays the "synthetic" set (real private photos that are neither training nor evaluation images), the
EVAL half is the only one evaluated. Rows: real only (also on the full held-out set, to compare with the
prototype), real + pool mixed uniformly, with half/half batches, and with half/half batches + dynamic selection.
If mixing or selection does not gain here, the recognizer or the mixing is at fault, not the generator.

    nice -n 5 python benchmarks/positive_control.py --shots 1 2 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from rlsyn_trl.data import load_identity_dataset  # noqa: E402
from rlsyn_trl.recognizer import RecognizerConfig, train_recognizer  # noqa: E402

CONDITIONS = {
    "real only (all held-out)": None,
    "real only": None,
    "+ pool, uniform mix": {"synthetic_ratio": None},
    "+ pool, half/half batches": {"synthetic_ratio": 0.5},
    "+ pool, half/half + selection": {"synthetic_ratio": 0.5, "selection": True},
}


def split_held_out(test: datasets.Dataset, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(pool, eval): per identity, a seeded half of the held-out images (rounded down) goes to the pool."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(test["label"])
    pool = []
    for label in np.unique(labels):
        images = rng.permutation(np.flatnonzero(labels == label))
        pool.extend(images[: len(images) // 2].tolist())
    rest = sorted(set(range(len(test))) - set(pool))
    return test.select(sorted(pool)), test.select(rest)


def run(shots: int, seed: int, overrides: dict[str, object]) -> dict[str, float]:
    """Test accuracy of every condition on one split."""
    real = load_identity_dataset("orl_faces", "private", shots=shots, seed=seed)
    pool, evaluation = split_held_out(real["test"], seed)
    controlled = datasets.DatasetDict(train=real["train"], test=evaluation)
    results = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for name, condition in CONDITIONS.items():
            config = RecognizerConfig(
                output_dir=output_dir, disable_tqdm=True, logging_steps=10_000, **overrides, **(condition or {})
            )
            splits = real if name == "real only (all held-out)" else controlled
            started = time.time()
            metrics = train_recognizer(config, splits, pool if condition is not None else None)
            results[name] = metrics["test_accuracy"]
            print(f"shots={shots} seed={seed} {name}: {100 * results[name]:.1f} ({time.time() - started:.0f} s)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max_steps", type=int, default=None, help="Override the recognizer's default.")
    parser.add_argument("--loss", choices=["cross_entropy", "cosface"], default=None)
    parser.add_argument("--threads", type=int, default=1, help="Torch threads (1 is fastest on busy shared cores).")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    overrides = {key: value for key, value in (("max_steps", args.max_steps), ("loss", args.loss)) if value}
    table = {(shots, seed): run(shots, seed, overrides) for shots in args.shots for seed in args.seeds}

    header = f"{'condition':32}" + "".join(f"{f'{shots} shot(s)':>18}" for shots in args.shots)
    print(f"\nORL private, test accuracy (%) on the eval half, mean +- std over split seeds {args.seeds}")
    print(header)
    for name in CONDITIONS:
        cells = []
        for shots in args.shots:
            values = [100 * table[shots, seed][name] for seed in args.seeds]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):>11.1f} +- {spread:3.1f}")
        print(f"{name:32}" + "".join(cells))


if __name__ == "__main__":
    main()
