"""The end-to-end job's recognizer rows at other budgets: accuracy and time against the defaults, in one run.

    OMP_NUM_THREADS=2 python benchmarks/row_budget.py --run outputs/main_split{0,1,2} [--budgets 300:20 200:10]

``rlsyn-trl run-all`` spends about a quarter of its time on recognizer rows of ``recognizer_steps`` steps and
another sampling ``samples_per_identity`` synthetic images per identity. For each finished job in ``--run``
(its generative stages; ``rlsyn-trl run-all --stages generation --split-seed S``), this trains the job's rows once
per budget ``steps:samples`` (samples per identity: the first k of each identity's samples, which are k independent
draws of the same sampler). The first budget is the baseline: the table gives each row's accuracy, mean +- std over
the runs, the gain over the baseline on the same split, and the rows' training time with its ratio to the baseline.
Sampling time is nearly proportional to the samples per identity (the generation stage's own timing). Run it on an
otherwise idle machine: only rows of one run are compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np

from rlsyn_trl.job.comparison import RowJob, recognizer_rows, train_row
from rlsyn_trl.job.pipeline import STAGE_RECORD, MainJobConfig
from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments
from rlsyn_trl.utils.runtime import setup_runtime


def first_per_identity(dataset: datasets.Dataset, per_identity: int) -> datasets.Dataset:
    """The first ``per_identity`` samples of every identity, in dataset order."""
    counts: dict[int, int] = {}
    keep = []
    for index, label in enumerate(dataset["label"]):
        if counts.get(label, 0) < per_identity:
            keep.append(index)
            counts[label] = counts.get(label, 0) + 1
    if min(counts.values()) < per_identity:
        raise ValueError(f"--budgets asks {per_identity} samples per identity; the dataset has {min(counts.values())}")
    return dataset.select(keep)


def run_rows(run: Path, steps: int, per_identity: int, scratch: Path, cache: dict) -> list[dict]:
    """The job's rows on ``run``'s split and synthetic sets at this budget: method, accuracy, seconds."""
    record = json.loads((run / STAGE_RECORD).read_text())
    config = MainJobConfig(**{**record["config"], "stages": "all"})
    split = RecognizerScriptArguments(
        dataset_name="orl_faces", dataset_config="private", shots=config.shots, split_seed=config.split_seed
    )
    results = []
    for method, source, overrides in recognizer_rows(ablation=False):
        key = (str(run), method, steps, per_identity if source else None)
        if key not in cache:  # the real rows do not depend on the samples
            if source:
                folder = scratch / f"{run.name}_{source}_{per_identity}"
                if not folder.exists():  # the subset keeps its dataset's provenance: the recipe checks it for leaks
                    source_folder = run / f"synthetic_{source}" / "dataset"
                    first_per_identity(datasets.load_from_disk(str(source_folder)), per_identity).save_to_disk(folder)
                    shutil.copy(source_folder / "provenance.json", folder / "provenance.json")
                overrides = {**overrides, "synthetic_dataset": str(folder)}
            job = RowJob(method, str(scratch / "recognizer"), config.recognizer_model, steps, config.seed, overrides)
            started = time.time()
            metrics = train_row(split, job)
            seconds = time.time() - started
            cache[key] = {"method": method, "accuracy": 100 * metrics["test_accuracy"], "seconds": seconds}
        results.append(cache[key])
    return results


def report(table: dict[str, dict[str, list[dict]]], budgets: list[str]) -> str:
    """Markdown: one row per (method, budget); accuracy mean +- std, paired gain, seconds and time ratio."""
    baseline = budgets[0]
    lines = [
        f"| method | budget (steps:samples per identity) | accuracy | gain over {baseline} per split | row seconds "
        "(mean) | time / baseline |",
        "|---|---|---|---|---|---|",
    ]
    methods = [row["method"] for row in next(iter(table[baseline].values()))]
    for index, method in enumerate(methods):
        for budget in budgets:
            accuracy = np.array([rows[index]["accuracy"] for rows in table[budget].values()])
            base = np.array([rows[index]["accuracy"] for rows in table[baseline].values()])
            seconds = np.mean([rows[index]["seconds"] for rows in table[budget].values()])
            base_seconds = np.mean([rows[index]["seconds"] for rows in table[baseline].values()])
            gains = ", ".join(f"{gain:+.1f}" for gain in accuracy - base) if budget != baseline else "-"
            lines.append(
                f"| {method} | {budget} | {accuracy.mean():.1f} +- {accuracy.std():.1f} | {gains} | {seconds:.0f} | "
                f"{seconds / base_seconds:.2f} |"
            )
    lines.append("")
    for budget in budgets:
        total = sum(row["seconds"] for rows in table[budget].values() for row in rows)
        base = sum(row["seconds"] for rows in table[baseline].values() for row in rows)
        lines.append(f"{budget}: all rows {total:.0f} s ({total / base:.2f} x the baseline's)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", required=True, help="finished main-job folders (their stages.json)")
    parser.add_argument("--budgets", nargs="+", default=["300:20", "200:10"], help="steps:samples per identity")
    parser.add_argument("--output", default="outputs/benchmarks/row_budget.json")
    args = parser.parse_args()
    runs = [Path(run) for run in args.run]
    for run in runs:
        if not (run / STAGE_RECORD).is_file():
            parser.error(f"{run} has no {STAGE_RECORD}: run `rlsyn-trl run-all --stages generation` there first")
    budgets = [tuple(int(part) for part in budget.split(":")) for budget in args.budgets]
    setup_runtime(offline=True)
    table: dict[str, dict[str, list[dict]]] = {}
    cache: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        for (steps, per_identity), name in zip(budgets, args.budgets, strict=True):
            for run in runs:
                table.setdefault(name, {})[str(run)] = run_rows(run, steps, per_identity, Path(scratch), cache)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(table, indent=2))
    print(report(table, args.budgets))


if __name__ == "__main__":
    main()
