import json
from pathlib import Path

import numpy as np
import pytest

from rlsyn_trl.job.comparison import (
    AUGMENTED_ROW,
    FULL_METHOD_ROW,
    RowJob,
    add_paired_gains,
    job_summary,
    recognizer_rows,
    results_table,
    train_rows,
)
from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments
from rlsyn_trl.recognizer import TINY_MODEL


def test_rows_side_by_side_match_rows_one_after_another(tmp_path):
    """Two workers (spawned, one thread each) return every row's metrics in the plan's order, as a sequential run."""
    split = RecognizerScriptArguments(dataset_name="orl_faces", dataset_config="private", shots=1, split_seed=0)
    rows = [(method, overrides) for method, source, overrides in recognizer_rows(ablation=False) if source is None]
    runs = {}
    for workers in (1, 2):
        jobs = [
            RowJob(method, str(tmp_path / f"w{workers}" / f"{index}_{steps}"), TINY_MODEL, steps, 0, overrides)
            for index, (method, overrides) in enumerate(rows)
            for steps in (2, 6)
        ]
        runs[workers] = train_rows(split, jobs, workers=workers)
        for job, metrics in zip(jobs, runs[workers], strict=True):
            saved = json.loads((Path(job.output_dir) / "test_results.json").read_text())
            assert saved["test_accuracy"] == metrics["test_accuracy"]  # each row's result where it was asked for
    accuracies = {workers: [metrics["test_accuracy"] for metrics in run] for workers, run in runs.items()}
    assert accuracies[2] == pytest.approx(accuracies[1], abs=2 / 180)  # 1 vs 2 threads: float sums may differ


def _results(accuracies: dict[str, list[float]]) -> dict:
    """A results.json as the job writes it, with rows trained over len(seeds) recognizer seeds."""
    seeds = list(range(len(next(iter(accuracies.values())))))
    rows = [
        {"method": method, "accuracy": float(np.mean(values)), "accuracies": values, "seeds": seeds}
        for method, values in accuracies.items()
    ]
    add_paired_gains(rows)
    return {
        "config": {"output_dir": "out", "shots": 1, "split_seed": 0, "seed": 0},
        "recognizer_start": "fine-tuned",
        "rows": rows,
        "timings_s": {"recognizers": 1.0},
        "budget_cuts": [],
        "artefacts": {
            "cold_start_adapter": "sft",
            "ddpo_adapter": "ddpo",
            "synthetic_datasets": {"rl": "rl"},
            "reward_curves": "curves.png",
            "cold_start_grid": "grid.png",
        },
    }


def test_each_row_reads_its_gain_over_augmentation_paired_by_recognizer_seed():
    """The seed moves every row together; the paired gain and its standard error are what a row's data change."""
    results = _results(
        {
            "real only": [0.80, 0.90, 0.85],
            AUGMENTED_ROW: [0.85, 0.95, 0.90],
            FULL_METHOD_ROW: [0.88, 0.93, 0.90],
        }
    )
    rows = {row["method"]: row for row in results["rows"]}
    assert AUGMENTED_ROW in rows and "gain_over_augmentation" not in rows[AUGMENTED_ROW]
    assert rows[FULL_METHOD_ROW]["gain_over_augmentation"] == pytest.approx(1 / 3)  # +3, -2, 0 points
    assert rows[FULL_METHOD_ROW]["gain_standard_error"] == pytest.approx(np.std([3, -2, 0], ddof=1) / np.sqrt(3))
    assert rows["real only"]["gain_over_augmentation"] == pytest.approx(-5.0)
    table = results_table(results)
    assert "recognizer seeds 0, 1, 2" in table and "| +0.3 +- 1.5 |" in table
    summary = job_summary(results)
    assert "within one standard error" in summary and "mean of 3 recognizer seeds" in summary

    clear = _results({"real only": [0.8, 0.8], AUGMENTED_ROW: [0.85, 0.9], FULL_METHOD_ROW: [0.9, 0.94]})
    assert "synthetic samples help" in job_summary(clear)  # +4.5 +- 0.5 points
    worse = _results({"real only": [0.8, 0.8], AUGMENTED_ROW: [0.85, 0.9], FULL_METHOD_ROW: [0.8, 0.86]})
    assert "synthetic samples do not help" in job_summary(worse)


def test_one_recognizer_seed_gives_a_gain_without_an_error_and_says_how_to_get_one():
    results = _results({"real only": [0.8], AUGMENTED_ROW: [0.85], FULL_METHOD_ROW: [0.9]})
    full = results["rows"][-1]
    assert full["gain_over_augmentation"] == pytest.approx(5.0) and "gain_standard_error" not in full
    assert "| +5.0 |" in results_table(results) and "(accuracy: their mean" not in results_table(results)
    assert "--recognizer_seeds 3" in job_summary(results) and "synthetic samples help" in job_summary(results)
