"""The stages that use phi run with every kind of it on tiny stand-ins: DDPO's reward (and one DDPO epoch), and
generation's scoring and audit, which record the kind in the dataset's provenance. The project's own encoder runs
through both stages in tests/test_generation.py and tests/trainers/test_ddpo.py."""

import math
import os
import sys
from pathlib import Path

import pytest
import torch
from synthetic_fixtures import PRIVATE_NAMES, build_tiny_adapter, build_tiny_phis, tiny_config

from rlsyn_trl.encoders import load_feature_extractor
from rlsyn_trl.provenance import read_provenance
from rlsyn_trl.recipes.generate import main as generate_synthetic_dataset
from rlsyn_trl.trainers import RLSynDDPOConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
from ddpo_processes import build_trainer  # noqa: E402

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

torch.set_num_threads(1)
KINDS = ["rlsyn_recognizer", "transformers", "onnx_arcface"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, datasets_cache):
    os.environ["HF_DATASETS_CACHE"] = datasets_cache
    root = tmp_path_factory.mktemp("phi_stages")
    return {"adapter": build_tiny_adapter(root, PRIVATE_NAMES), "phis": build_tiny_phis(root / "phi")}


@pytest.mark.parametrize("kind", KINDS)
def test_generation_scores_and_audits_with_each_kind(tiny, datasets_cache, tmp_path, kind):
    models = {"adapter": tiny["adapter"], "encoder": tiny["phis"][kind]}
    dataset, summary = generate_synthetic_dataset(tiny_config(models, datasets_cache, tmp_path / "run"))
    assert len(dataset) == 9 and all(math.isfinite(value) for value in dataset["reward"])
    assert all(value >= 0 for value in dataset["nn_real_feature_distance"])
    assert summary["audit"]["thresholds"]["feature"] > 0
    phi = read_provenance(tmp_path / "run")["phi"]
    assert phi["kind"] == kind and phi["reference"] == tiny["phis"][kind]


@pytest.mark.parametrize("kind", KINDS)
def test_ddpo_reward_runs_with_each_kind(tiny, tmp_path, kind):
    config = RLSynDDPOConfig(
        adapter=str(tiny["adapter"]), encoder=tiny["phis"][kind], output_dir=str(tmp_path), identities_per_epoch=2,
        samples_per_identity=4, sample_batch_size=8, train_batch_size=8, sample_num_steps=2, num_epochs=1,
        train_timestep_fraction=0.5, lora_rank=2, lora_target_modules=["attn1.to_q"], eval_seeds=[],
    )  # fmt: skip
    trainer = build_trainer(config)
    assert trainer.reward.encoder.kind == kind == load_feature_extractor(config.encoder).kind
    history = trainer.train()
    assert math.isfinite(history[-1]["reward/total_mean"])
