"""Positive control of the downstream pipeline: real extra data must help, or the recognizer or mixing is at fault.

For each ORL private split (k shots, split seed s), each identity's held-out images are cut in two halves: the
POOL half plays the "synthetic" set (real private photos that are neither training nor evaluation images), the
EVAL half is the only one evaluated. Rows: real only (also on all held-out images, to compare with the other tables),
real + pool mixed uniformly, with half/half batches, and with half/half batches + dynamic selection. If mixing or
selection does not gain here, the recognizer or the mixing is at fault, not the generator.

``--rows noisy`` is a selection control: the same pool with a fraction ``--wrong_labels`` of its labels moved to
another identity, trained with half/half batches without selection, with selection as in the paper (virtual step
on the mixed batch) and with the virtual step on the real images only (``virtual_batch="real"``).

    nice -n 5 python benchmarks/positive_control.py --shots 1 2 --seeds 0 1 2
    nice -n 5 python benchmarks/positive_control.py --shots 1 2 --seeds 0 --rows noisy
    nice -n 5 python benchmarks/positive_control.py --shots 1 --seeds 0 1 2 --model embedded:orl_faces/encoder
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from rlsyn_trl.data import load_identity_dataset  # noqa: E402
from rlsyn_trl.recognizer import RecognizerConfig, train_recognizer  # noqa: E402
from rlsyn_trl.utils.runtime import setup_runtime  # noqa: E402


@dataclass(frozen=True)
class Condition:
    """Which extra set is mixed in (``None``, ``"pool"`` or ``"noisy"``), how, and on what it is evaluated."""

    extra: str | None = None
    overrides: dict[str, object] = field(default_factory=dict)
    all_held_out: bool = False


HALF_HALF, SELECTION = {"synthetic_ratio": 0.5}, {"synthetic_ratio": 0.5, "selection": True}
MAIN_CONDITIONS = {
    "real only, all held-out images": Condition(all_held_out=True),
    "real only": Condition(),
    "+ pool, uniform mix": Condition("pool", {"synthetic_ratio": None}),
    "+ pool, half/half batches": Condition("pool", HALF_HALF),
    "+ pool, half/half + selection": Condition("pool", SELECTION),
}
NOISY_CONDITIONS = {
    "+ noisy pool, half/half batches": Condition("noisy", HALF_HALF),
    "+ noisy pool, + selection (mixed step)": Condition("noisy", SELECTION),
    "+ noisy pool, + selection (real step)": Condition("noisy", {**SELECTION, "virtual_batch": "real"}),
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


def with_wrong_labels(pool: datasets.Dataset, fraction: float, seed: int) -> datasets.Dataset:
    """``pool`` with a seeded ``fraction`` of its labels moved to another, random identity."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(pool["label"])
    num_classes = pool.features["label"].num_classes
    wrong = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    labels[wrong] = (labels[wrong] + rng.integers(1, num_classes, size=len(wrong))) % num_classes
    return pool.remove_columns("label").add_column("label", labels.tolist(), feature=pool.features["label"])


def run(
    shots: int, seed: int, conditions: dict[str, Condition], settings: dict[str, object], wrong_labels: float
) -> dict[str, float]:
    """Test accuracy of every condition on one split."""
    real = load_identity_dataset("orl_faces", "private", shots=shots, seed=seed)
    pool, evaluation = split_held_out(real["test"], seed)
    extras = {"pool": pool, "noisy": with_wrong_labels(pool, wrong_labels, seed)}
    controlled = datasets.DatasetDict(train=real["train"], test=evaluation)
    results = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for name, condition in conditions.items():
            config = RecognizerConfig(output_dir=output_dir, disable_tqdm=True, **settings, **condition.overrides)
            started = time.time()
            with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints every log line
                metrics = train_recognizer(
                    config, real if condition.all_held_out else controlled, extras.get(condition.extra)
                )
            results[name] = metrics["test_accuracy"]
            print(f"shots={shots} seed={seed} {name}: {100 * results[name]:.1f} ({time.time() - started:.0f} s)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Split seeds (the pool split too).")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the recognizer's default.")
    parser.add_argument("--loss", choices=["cross_entropy", "cosface"], default=None)
    parser.add_argument("--model", default=None, help="Recognizer start, e.g. embedded:orl_faces/encoder.")
    parser.add_argument("--rows", choices=["main", "noisy"], nargs="+", default=["main"], help="Which conditions.")
    parser.add_argument("--wrong_labels", type=float, default=0.5, help="Mislabelled fraction of the noisy pool.")
    parser.add_argument("--threads", type=int, default=1, help="Torch threads (1 is fastest on busy shared cores).")
    args = parser.parse_args()
    setup_runtime(threads=args.threads)
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    settings = {"max_steps": args.max_steps, "loss": args.loss, "model": args.model}
    settings = {key: value for key, value in settings.items() if value is not None}
    rows = {"main": MAIN_CONDITIONS, "noisy": NOISY_CONDITIONS}
    conditions = {name: condition for group in args.rows for name, condition in rows[group].items()}
    table = {
        (shots, seed): run(shots, seed, conditions, settings, args.wrong_labels)
        for shots in args.shots
        for seed in args.seeds
    }

    print(f"\nORL private, test accuracy (%) on the eval half, mean +- std over split seeds {args.seeds}", end="")
    print(f"; noisy pool: {100 * args.wrong_labels:.0f}% wrong labels" if "noisy" in args.rows else "")
    print(f"{'condition':38}" + "".join(f"{f'{shots} shot(s)':>16}" for shots in args.shots))
    for name in conditions:
        cells = []
        for shots in args.shots:
            values = [100 * table[shots, seed][name] for seed in args.seeds]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):>9.1f} +- {spread:3.1f}")
        print(f"{name:38}" + "".join(cells))


if __name__ == "__main__":
    main()
