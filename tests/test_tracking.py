"""Trackers named by ``log_with`` start and record: the config flattened to scalars, the training curves."""

import datasets
import numpy as np
import pytest
from conftest import build_tiny_generator, read_events
from PIL import Image

from rlsyn_trl.generators.adapter import freeze_backbone, replace_class_embedders
from rlsyn_trl.trainers import ColdStartConfig, ColdStartTrainer
from rlsyn_trl.utils.tracking import scalar_config

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)


def test_scalar_config_flattens_what_tensorboard_refuses():
    flat = scalar_config({"lr": 1e-3, "steps": 3, "on": True, "name": "x", "targets": ["to_q", "to_v"],
                          "sigma": None, "nested": {"inner": {"rank": 4}, "widths": (8, 16)}})  # fmt: skip
    assert flat == {"lr": 1e-3, "steps": 3, "on": True, "name": "x", "targets": "['to_q', 'to_v']", "sigma": "None",
                    "nested/inner/rank": 4, "nested/widths": "(8, 16)"}  # fmt: skip


def test_a_tracker_that_is_not_installed_is_refused_with_the_fix(tmp_path):
    from rlsyn_trl.utils.tracking import build_trackers

    with pytest.raises(ValueError, match=r"--log_with no_such_tracker: not installed.*pip install"):
        build_trackers(["no_such_tracker"], "run", tmp_path)
    assert build_trackers(None, "run", tmp_path) == []


def test_cold_start_logs_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    rng = np.random.default_rng(0)
    names = ["a", "b"]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    pictures = [Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)) for _ in range(4)]
    train = datasets.Dataset.from_dict({"image": pictures, "label": [0, 0, 1, 1]}, features=features)
    generator = build_tiny_generator(resolution=16)
    replace_class_embedders(generator, names)
    freeze_backbone(generator)
    # The default config holds a list (lora_target_modules) and None values: tensorboard's hparams refuse both.
    settings = {"max_steps": 2, "batch_size": 4, "warmup_steps": 1, "log_with": "tensorboard"}
    config = ColdStartConfig(output_dir=str(tmp_path), **settings)
    trainer = ColdStartTrainer(generator, train, config)
    trainer.train()
    trainer.end()
    scalars, hparams = read_events(tmp_path / "logs")
    assert {"cold_start/loss", "cold_start/lr"} <= scalars
    assert hparams["lora_target_modules"] == str(config.lora_target_modules) and hparams["max_steps"] == 2
