"""One process with every CPU thread against data-parallel processes of one thread each, stage by stage.

    HF_HUB_OFFLINE=1 python benchmarks/cpu_processes.py [--adapter outputs/main/sft] [--samples 120] [--epochs 2]

``rlsyn-trl run-all`` runs the generative stages as one process per core (``--processes auto``); its rows can
train side by side (``--recognizer-workers``). This measures both choices in one run on this machine: the cold
start (``--steps`` steps), then from its adapter (or ``--adapter``) DDPO (``--epochs`` epochs) and generation
(``--samples`` samples), each as ``rlsyn-trl <stage>`` in one process against ``accelerate launch`` of the same
command as N processes, and ``--rows`` recognizer rows one after another against side by side. Each line prints
both times and the ratio (one process / N processes). Fixed costs (process start, imports, a last shard that only
one process samples) weigh more in small runs. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlsyn_trl.utils.launch import available_cores, launch_command, launch_environment


def timed(command: list[str], environment: dict[str, str]) -> float:
    started = time.time()
    subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - started


def stage_times(argv: list[str], output: Path, processes: int) -> tuple[float, float]:
    """Seconds of ``rlsyn-trl argv`` in one process (every core's thread), then as ``processes`` processes, each
    into its own folder under ``output`` (a stage resumes what it finds)."""
    single = timed(
        [sys.executable, "-m", "rlsyn_trl.cli", *argv, "--output_dir", str(output / "single")], dict(os.environ)
    )
    group_argv = [*argv, "--output_dir", str(output / "group")]
    group = timed(launch_command(group_argv, processes), launch_environment(1, use_cpu=True))
    return single, group


def row_times(work: Path, rows: int, steps: int, workers: int) -> tuple[float, float]:
    """Seconds of ``rows`` real-only recognizer rows one after another, then ``workers`` side by side."""
    from rlsyn_trl.job.comparison import RowJob, train_rows
    from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments

    split = RecognizerScriptArguments(dataset_name="orl_faces", dataset_config="private", shots=1, split_seed=0)
    times = []
    for count in (1, workers):
        jobs = [
            RowJob(f"row {index}", str(work / f"rows{count}" / str(index)), "embedded:orl_faces/encoder", steps, index)
            for index in range(rows)
        ]
        started = time.time()
        train_rows(split, jobs, workers=count)
        times.append(time.time() - started)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=None, help="A cold-start adapter (default: train a 40-step one).")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="Cold-start steps timed.")
    parser.add_argument("--epochs", type=int, default=2, help="DDPO epochs timed.")
    parser.add_argument("--samples", type=int, default=120, help="Samples generated (a multiple of 20 identities).")
    parser.add_argument("--rows", type=int, default=2, help="Recognizer rows timed.")
    parser.add_argument("--row-steps", type=int, default=150)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="cpu_processes_"))
    sft = ["sft", "--config", "orl_faces/sft", "--max_steps", str(args.steps), "--grid_per_identity", "1"]
    ddpo = ["ddpo", "--config", "orl_faces/ddpo", "--num_epochs", str(args.epochs)]
    generate = ["generate", "--config", "orl_faces/generate", "--num_inference_steps", "10", "--eta", "1.0"]
    generate += ["--samples_per_identity", str(args.samples // 20)]
    print(f"{available_cores()} cores; 1 process of {available_cores()} threads vs {args.processes} processes of 1")
    print("| stage | 1 process (s) | processes (s) | ratio |\n|---|---|---|---|")

    def report(stage: str, times: tuple[float, float]) -> None:
        print(f"| {stage} | {times[0]:.0f} | {times[1]:.0f} | {times[0] / times[1]:.2f} |", flush=True)

    report(f"cold start, {args.steps} steps", stage_times(sft, work / "sft", args.processes))
    adapter = args.adapter or str(work / "sft" / "single")
    report(f"DDPO, {args.epochs} epochs", stage_times([*ddpo, "--adapter", adapter], work / "ddpo", args.processes))
    report(
        f"generation, {args.samples} samples",
        stage_times([*generate, "--adapter", adapter], work / "generate", args.processes),
    )
    report(
        f"recognizer, {args.rows} rows of {args.row_steps} steps",
        row_times(work, args.rows, args.row_steps, args.processes),
    )


if __name__ == "__main__":
    main()
