"""Which start the main job's recognizer uses: the tiny ResNet from scratch or the public feature extractor.

    python benchmarks/recognizer_start.py [--shots 1 2] [--seeds 0 1 2] [--steps 300] [--starts scratch encoder]

The main job uses whichever start gives the better real-only result, in every row. For each start and split
seed this trains the main job's recognizer rows without synthetic data: real only (no augmentation) and real +
standard augmentation, training seed = split seed as in ``benchmarks/ablation.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
from transformers.utils import logging as hf_logging

from rlsyn_trl.data import load_identity_dataset
from rlsyn_trl.job.comparison import NO_AUGMENTATION, recognizer_config
from rlsyn_trl.job.config import RECOGNIZER_STARTS, MainJobConfig
from rlsyn_trl.recognizer import train_recognizer
from rlsyn_trl.utils.runtime import setup_runtime

ROWS = {"real only": NO_AUGMENTATION, "real + standard augmentation": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--starts", nargs="+", choices=RECOGNIZER_STARTS, default=list(RECOGNIZER_STARTS))
    parser.add_argument("--output-dir", default="outputs/benchmarks/recognizer_start")
    args = parser.parse_args()
    setup_runtime(offline=True)  # every run seeds itself (training seed = split seed)
    hf_logging.set_verbosity_error()
    starts = {start: MainJobConfig(recognizer_start=start).recognizer_model for start in args.starts}
    lines = [
        f"ORL private, test accuracy % mean +- std over split seeds {args.seeds}, {args.steps} steps",
        "",
        "| start | data | " + " | ".join(f"{k} shot{'s' if k > 1 else ''}" for k in args.shots) + " |",
        "|---|---|" + "---|" * len(args.shots),
    ]
    for start, model in starts.items():
        for row, overrides in ROWS.items():
            cells = []
            for shots in args.shots:
                accuracies, started = [], time.time()
                for seed in args.seeds:
                    real = load_identity_dataset("orl_faces", "private", shots=shots, seed=seed)
                    folder = f"{args.output_dir}/{start}_{shots}shot_{seed}"
                    config = recognizer_config(folder, model, args.steps, seed, **overrides)
                    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints every log line
                        accuracies.append(100 * train_recognizer(config, real)["test_accuracy"])
                per_run = (time.time() - started) / len(args.seeds)
                print(f"{start} | {row} | {shots} shot(s): {accuracies} ({per_run:.0f} s a run)", flush=True)
                cells.append(f"{np.mean(accuracies):.1f} +- {np.std(accuracies):.1f}")
            lines.append(f"| {start} ({model}) | {row} | " + " | ".join(cells) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
