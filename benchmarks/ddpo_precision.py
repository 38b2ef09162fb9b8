"""The main job's DDPO stage under fp32 and bf16: reward terms, clipping and time per epoch, side by side.

    python benchmarks/ddpo_precision.py --output-dir outputs/ddpo_precision [--adapter outputs/orl_faces/sft]

Each precision runs ``rlsyn-trl ddpo --config orl_faces/ddpo`` (the job's DDPO settings) in a process of its own,
since a process runs one precision, on the same cold-start adapter (default: the job's cold start, trained first
with ``rlsyn-trl sft --config orl_faces/sft``, precision ``auto`` as in the job). Both runs draw the same noise per
sample, so the curves differ only by the arithmetic. DDPO computes its step log-probabilities in float32 on the
sampling and on the training side; when bf16 computed them in its own precision, a sampled step's recomputed
log-probability lay up to 0.03 from the recorded one, and with ``train_clip_range`` 1e-4 the clip fraction measured
that rounding. A bf16 clip fraction close to fp32's says the ratio measures the policy's change. Prints one row per
epoch and the bf16 / fp32 time ratio, writes ``ddpo_precision.json`` and ``ddpo_precision.png`` (the reward terms of
both runs) under ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = {
    "R_sem": "reward/sem_mean",
    "R_cov": "reward/cov_mean",
    "R_exp": "reward/exp_mean",
    "clipfrac": "train/clipfrac",
    "approx_kl": "train/approx_kl",
    "epoch_s": "time/epoch_s",
}


def run_stage(arguments: list[str], threads: int) -> float:
    """One stage in a fresh process (its own precision), as a user runs it; returns its wall time."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlsyn_trl.cli", *arguments], env=environment, check=True)
    return time.perf_counter() - started


def read_metrics(folder: Path) -> list[dict]:
    lines = (folder / "logs" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/ddpo_precision")
    parser.add_argument("--adapter", default=None, help="A cold-start adapter (default: train the job's one).")
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-epochs", type=int, default=None, help="Default: ddpo.yaml's.")
    args = parser.parse_args()
    output = Path(args.output_dir)
    adapter = Path(args.adapter) if args.adapter else output / "sft"
    if not (adapter / "provenance.json").is_file():
        seconds = run_stage(["sft", "--config", "orl_faces/sft", "--output_dir", str(adapter)], args.threads)
        print(f"cold start: {seconds:.0f} s -> {adapter}")
    runs, seconds = {}, {}
    for precision in args.precisions:
        folder = output / f"ddpo_{precision}"
        command = ["ddpo", "--config", "orl_faces/ddpo", "--adapter", str(adapter), "--output_dir", str(folder)]
        command += ["--mixed_precision", precision]
        if args.num_epochs is not None:
            command += ["--num_epochs", str(args.num_epochs)]
        seconds[precision] = run_stage(command, args.threads)
        runs[precision] = read_metrics(folder)
    print("epoch  " + "  ".join(f"{name:>9}[{p}]" for name in COLUMNS for p in args.precisions))
    for epoch in range(max(len(records) for records in runs.values())):
        cells = []
        for key in COLUMNS.values():
            for precision in args.precisions:
                records = runs[precision]
                cells.append(f"{records[epoch][key]:>13.4g}" if epoch < len(records) else " " * 13)
        print(f"{epoch:>5}  " + "  ".join(cells))
    baseline = args.precisions[0]
    for precision in args.precisions[1:]:
        print(f"DDPO wall time {precision} / {baseline}: {seconds[precision]:.0f} s / {seconds[baseline]:.0f} s = "
              f"{seconds[precision] / seconds[baseline]:.2f}x")  # fmt: skip
    result = {"adapter": str(adapter), "threads": args.threads, "seconds": seconds, "epochs": runs}
    (output / "ddpo_precision.json").write_text(json.dumps(result, indent=1))

    from rlsyn_trl.utils.visualization import save_curves

    curves = {
        f"{name} ({'fp32' if precision == 'no' else precision})": [record[COLUMNS[name]] for record in runs[precision]]
        for name in ("R_sem", "R_cov", "R_exp")
        for precision in args.precisions
    }
    print(save_curves(curves, output / "ddpo_precision.png", "DDPO reward terms by precision", "epoch"))


if __name__ == "__main__":
    main()
