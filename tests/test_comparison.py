import json
from pathlib import Path

import pytest

from rlsyn_trl.job.comparison import RowJob, recognizer_rows, train_rows
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
