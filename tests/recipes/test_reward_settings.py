"""The reward set in a DDPO recipe YAML is the reward DDPO trains with, the one its provenance records, and the one
generation scores that policy's samples with: the very value reaches ``composite_reward`` in both stages."""

import inspect
import os

import pytest
import torch
import yaml
from synthetic_fixtures import build_tiny_models, tiny_config

from rlsyn_trl.provenance import read_provenance, read_reward
from rlsyn_trl.recipes import ddpo as ddpo_recipe
from rlsyn_trl.recipes import generate as generate_recipe
from rlsyn_trl.recipes import parse_stage
from rlsyn_trl.rewards import RewardOptions, composite_reward, identity_reward, memory_bank

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

torch.set_num_threads(1)


@pytest.fixture
def reward_calls(monkeypatch):
    """The ``options`` of every real ``composite_reward`` call the stages make."""
    calls = []
    signature = inspect.signature(composite_reward)

    def spy(*args, **kwargs):
        calls.append(signature.bind(*args, **kwargs).arguments["options"])
        return composite_reward(*args, **kwargs)

    for module in (memory_bank, identity_reward):
        monkeypatch.setattr(module, "composite_reward", spy)
    return calls


def test_a_reward_setting_reaches_the_reward_in_ddpo_and_generation(tmp_path, datasets_cache, reward_calls):
    os.environ["HF_DATASETS_CACHE"] = datasets_cache
    models = build_tiny_models(tmp_path / "models")
    settings = {
        "adapter": str(models["adapter"]), "encoder": str(models["encoder"]), "output_dir": str(tmp_path / "ddpo"),
        "identities_per_epoch": 2, "samples_per_identity": 4, "sample_batch_size": 8, "train_batch_size": 8,
        "sample_num_steps": 2, "num_epochs": 1, "train_timestep_fraction": 0.5, "lora_rank": 2,
        "lora_target_modules": ["attn1.to_q"], "eval_seeds": [],
        "reward_weights": [1.0, 0.5, 2.0], "reward_alpha": 0.7, "reward_tau": 0.3,
    }  # fmt: skip
    recipe = tmp_path / "ddpo.yaml"
    recipe.write_text(yaml.safe_dump(settings))
    (config,) = parse_stage(ddpo_recipe.CONFIG_CLASSES, ["--config", str(recipe)])
    expected = RewardOptions(weights=(1.0, 0.5, 2.0), alpha=0.7, tau=0.3)

    ddpo_recipe.main(config)
    assert reward_calls and all(options == expected for options in reward_calls)
    assert read_reward(read_provenance(tmp_path / "ddpo")["reward"]) == (str(models["encoder"]), expected)

    reward_calls.clear()
    policy = {"adapter": tmp_path / "ddpo", "encoder": models["encoder"]}
    generate_recipe.main(tiny_config(policy, datasets_cache, tmp_path / "synthetic"))
    assert reward_calls and all(options == expected for options in reward_calls)
    assert read_reward(read_provenance(tmp_path / "synthetic")["reward"]) == (str(models["encoder"]), expected)
