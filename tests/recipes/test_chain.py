"""The README's stage commands as a new user runs them: `accelerate launch recipes/<stage>.py --config ...`, each
stage reading the previous one's output, with few steps through CLI overrides. Checks the provenance chain."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = [
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def run_stage(stage: str, config: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "1",
    }
    command = [*LAUNCH, f"recipes/{stage}.py", "--config", f"recipes/orl_faces/{config}.yaml", *overrides]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.mark.slow
def test_readme_stage_commands_chain_with_provenance(tmp_path):
    sft, ddpo, synthetic = tmp_path / "sft", tmp_path / "ddpo", tmp_path / "synthetic"
    # Cold start on 2 shots (the recognizer's recipe uses 1 shot of the same split seed: a leak to refuse below).
    run_stage(
        "sft",
        "sft",
        "--output_dir",
        str(sft),
        "--shots",
        "2",
        "--max_steps",
        "2",
        "--batch_size",
        "8",
        "--checkpoint_every",
        "2",
        "--grid_per_identity",
        "1",
        "--num_inference_steps",
        "2",
    )
    run_stage(
        "ddpo",
        "ddpo",
        "--adapter",
        str(sft),
        "--output_dir",
        str(ddpo),
        "--num_epochs",
        "1",
        "--sample_num_steps",
        "3",
        "--train_timestep_fraction",
        "0.5",
        "--save_freq",
        "1",
    )
    run_stage(
        "generate",
        "generate",
        "--adapter",
        str(ddpo),
        "--output_dir",
        str(synthetic),
        "--samples_per_identity",
        "2",
        "--num_inference_steps",
        "2",
        "--shard_size",
        "20",
    )

    cold, policy = (json.loads((folder / "provenance.json").read_text()) for folder in (sft, ddpo))
    dataset = json.loads((synthetic / "dataset" / "provenance.json").read_text())
    assert [cold["stage"], policy["stage"], dataset["stage"]] == ["cold_start", "ddpo", "generation"]
    assert dataset["parent"]["id"] == str(ddpo) and policy["parent"]["id"] == str(sft)
    assert dataset["parent"]["provenance"]["parent"]["provenance"]["stage"] == "cold_start"
    for record in (policy, dataset):  # the split is read from the adapter, not asked again
        assert record["data"]["fingerprint"] == cold["data"]["fingerprint"] and record["data"]["shots"] == 2
    assert policy["training"] == cold["training"]  # DDPO's denoising anchor used the cold start's settings
    assert dataset["reward"] == policy["reward"] and dataset["reward"]["tau"] == 0.25  # the trained reward

    # The documented recognizer recipe (1 shot, split seed 0) must refuse a set whose generator saw its test photos.
    refused = run_stage(
        "train_recognizer",
        "recognizer",
        "--synthetic_dataset",
        str(synthetic / "dataset"),
        "--output_dir",
        str(tmp_path / "leaky"),
        "--max_steps",
        "2",
        check=False,
    )
    assert refused.returncode != 0
    assert "shots=2, split_seed=0" in refused.stderr and "20 of the 180 evaluation images" in refused.stderr
    # On the generator's own split it trains, and its results record the chain.
    run_stage(
        "train_recognizer",
        "recognizer",
        "--synthetic_dataset",
        str(synthetic / "dataset"),
        "--shots",
        "2",
        "--output_dir",
        str(tmp_path / "recognizer"),
        "--max_steps",
        "2",
        "--logging_steps",
        "1",
    )
    recognizer = json.loads((tmp_path / "recognizer" / "provenance.json").read_text())
    assert recognizer["stage"] == "recognizer" and recognizer["parent"]["provenance"]["stage"] == "generation"
    assert 0 <= recognizer["metrics"]["test_accuracy"] <= 1
