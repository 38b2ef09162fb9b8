"""The recognizer recipe's test sets: RFW's races next to the insightface verification sets."""

import json

import numpy as np
import pytest
from PIL import Image

from rlsyn_trl.data.face_verification import RFW_RACES
from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments, main
from rlsyn_trl.recognizer import RecognizerConfig
from rlsyn_trl.settings import SettingsError


def write_rfw(root, rng: np.random.Generator) -> None:
    """RFW's release layout: test/data/<Race>/<identity>/<identity>_<nnnn>.jpg and tab-separated pair lists with
    10 folds of one matched and one mismatched pair."""
    for race in RFW_RACES:
        identities = [f"m.0{race[:2].lower()}{index}" for index in range(3)]
        for identity in identities:
            for number in (1, 2):
                path = root / "test" / "data" / race / identity / f"{identity}_{number:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        lines = []
        for fold in range(10):
            identity, other = identities[fold % 3], identities[(fold + 1) % 3]
            lines += [f"{identity}\t1\t2", f"{identity}\t2\t{other}\t1"]
        pairs = root / "test" / "txts" / race / f"{race}_pairs.txt"
        pairs.parent.mkdir(parents=True, exist_ok=True)
        pairs.write_text("\n".join(lines) + "\n")


def test_rfw_races_are_tested_and_summarised_apart(tmp_path, monkeypatch):
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache")
    write_rfw(tmp_path / "RFW", np.random.default_rng(0))
    script = RecognizerScriptArguments(
        dataset_name="orl_faces", dataset_config="private", shots=1, split_seed=0,
        rfw_races=["all"], rfw_data_dir=str(tmp_path / "RFW"),
    )  # fmt: skip
    assert script.rfw_races == ["african", "asian", "caucasian", "indian"]
    config = RecognizerConfig(
        output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=8, report_to="none",
        disable_tqdm=True, channels=1, resolution=16,
    )  # fmt: skip
    metrics = main(script, config)
    for race in script.rfw_races:
        assert 0 <= metrics[f"test_rfw_{race}_accuracy"] <= 1
    accuracies = [metrics[f"test_rfw_{race}_accuracy"] for race in script.rfw_races]
    assert metrics["test_rfw_mean_accuracy"] == pytest.approx(np.mean(accuracies))
    assert metrics["test_rfw_std_accuracy"] == pytest.approx(np.std(accuracies))
    assert "test_verification_mean_accuracy" not in metrics and 0 <= metrics["test_accuracy"] <= 1
    assert json.loads((tmp_path / "run" / "test_results.json").read_text()) == metrics


def test_rfw_settings_are_checked_before_any_work():
    with pytest.raises(SettingsError, match="--rfw_races 'european'.*african, asian, caucasian, indian or all"):
        RecognizerScriptArguments(rfw_races=["european"], rfw_data_dir="x")
    with pytest.raises(SettingsError, match="--rfw_data_dir None.*test/ folder"):
        RecognizerScriptArguments(rfw_races=["asian"])
