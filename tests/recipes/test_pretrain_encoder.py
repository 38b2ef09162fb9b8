"""The encoder pre-training recipe: phi from public identities only, streamed, refused when it would see a target
identity, saved where ``--encoder`` loads it."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from trl import TrlParser

from rlsyn_trl.encoders import load_encoder
from rlsyn_trl.provenance import read_provenance
from rlsyn_trl.recipes import RECIPES_DIR
from rlsyn_trl.recipes import pretrain_encoder as recipe
from rlsyn_trl.recipes.pretrain_encoder import main as pretrain_encoder
from rlsyn_trl.settings import SettingsError
from rlsyn_trl.trainers.encoder_pretraining import EncoderPretrainConfig, streamed_batches

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_smoke  # noqa: E402

BENCHMARKS = ["orl_faces", "casia_webface", "market1501", "cuhk03_labeled", "cuhk03_detected"]


def tiny(output_dir, **overrides) -> EncoderPretrainConfig:
    values = dict(output_dir=str(output_dir), resolution=16, encoder_widths=[8, 16], embedding_size=16,
                  encoder_steps=4, encoder_batch_size=8, checkpoint_every=2)  # fmt: skip
    return EncoderPretrainConfig(**{**values, **overrides})


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def test_public_orl_encoder_is_saved_with_card_and_provenance_and_loads_as_phi(tmp_path, datasets_cache):
    summary = pretrain_encoder(tiny(tmp_path / "encoder"))
    assert summary["num_identities"] == 20 and summary["num_images"] == 200 and summary["steps_done"] == 4
    encoder = load_encoder(str(tmp_path / "encoder"))  # what --encoder loads
    features = encoder.encode_batched(torch.rand(3, 1, 16, 16) * 2 - 1)
    assert features.shape == (3, 16) and torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-5)
    record = read_provenance(tmp_path / "encoder")
    assert record["stage"] == "encoder" and record["data"]["identities"] == [f"s{i}" for i in range(1, 21)]
    assert record["data"]["dataset_config"] == "public" and len(record["data"]["train_images"]) == 200
    assert record["target"]["dataset_config"] == "private" and record["target"]["num_identities"] == 20
    card = (tmp_path / "encoder" / "README.md").read_text()
    assert "public identities only" in card and "orl_faces/private" in card and "none trained on" in card


def test_resume_draws_the_batches_of_an_uninterrupted_run(tmp_path, datasets_cache, monkeypatch):
    """Checkpoints carry the step, and the per-step schedule restarts the image loader there."""
    pretrain_encoder(tiny(tmp_path / "full"))

    def interrupted(*args):  # the job dies when it asks for step 2's batch, after the step-2 checkpoint
        batches = streamed_batches(*args)

        def batch(step):
            if step == 2:
                raise KeyboardInterrupt
            return batches(step)

        return batch

    monkeypatch.setattr(recipe, "streamed_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain_encoder(tiny(tmp_path / "split"))
    monkeypatch.undo()
    assert sorted(path.name for path in (tmp_path / "split" / "checkpoints" / "encoder").iterdir()) == ["step-2"]
    pretrain_encoder(tiny(tmp_path / "split", resume=True))
    full, resumed = (load_encoder(str(tmp_path / name)).state_dict() for name in ("full", "split"))
    for name, value in full.items():
        torch.testing.assert_close(resumed[name], value, msg=name)


def test_casia_trains_on_every_identity_outside_the_private_subset(tmp_path, datasets_cache):
    gpu_smoke.write_casia(tmp_path / "casia", 1004, 2, 16, np.random.default_rng(0))
    common = dict(dataset_name="casia_webface", dataset_config="default", data_dir=str(tmp_path / "casia"),
                  target_dataset_name="casia_webface", target_dataset_config="subset_1k", target_shots=2,
                  target_split_seed=0, channels=3)  # fmt: skip
    with pytest.raises(SettingsError, match=r"1000 of its 1004 identities .* private target casia_webface/subset_1k"):
        pretrain_encoder(tiny(tmp_path / "refused", **common))  # refused before any image is read
    assert not (tmp_path / "refused").exists() and not list(datasets_cache.rglob("*.arrow"))  # nothing built

    summary = pretrain_encoder(tiny(tmp_path / "encoder", exclude_target_identities=True, **common))
    assert summary["num_identities"] == 4 and summary["num_images"] == 8 and summary["excluded_identities"] == 1000
    record = read_provenance(tmp_path / "encoder")
    kept = record["data"]["identities"]
    assert len(kept) == 4 and not set(kept) & set(record["target"]["excluded"])
    assert load_encoder(str(tmp_path / "encoder")).config.num_channels == 3


def test_a_config_overlapping_the_target_is_refused_when_parsed(tmp_path):
    with pytest.raises(SettingsError, match=r"--dataset_config 'private': is the private target itself .*"
                                            r"--exclude_target_identities true"):  # fmt: skip
        tiny(tmp_path, dataset_config="private", target_dataset_config="private")
    with pytest.raises(SettingsError, match="--exclude_target_identities True: drops identities of the same"):
        tiny(tmp_path, dataset_name="market1501", target_dataset_name="cuhk03_np", exclude_target_identities=True)
    with pytest.raises(SettingsError, match="--target_dataset_name 'nope'"):
        tiny(tmp_path, target_dataset_name="nope")


def test_reid_target_sees_its_own_training_identities_refused(tmp_path, datasets_cache):
    gpu_smoke.write_cuhk03(tmp_path / "cuhk03", (8, 16), np.random.default_rng(0))
    config = tiny(tmp_path / "refused", dataset_name="cuhk03_np", dataset_config="labeled", shots=None,
                  data_dir=str(tmp_path / "cuhk03"), target_dataset_name="cuhk03_np", target_dataset_config="detected",
                  channels=3)  # fmt: skip
    with pytest.raises(SettingsError, match=r"of the private target cuhk03_np/detected"):
        pretrain_encoder(config)


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_encoder_yamls_parse_and_feed_the_chain(benchmark):
    (config,) = TrlParser((EncoderPretrainConfig,)).parse_args_and_config(
        ["--config", str(RECIPES_DIR / benchmark / "encoder.yaml")]
    )
    if (
        benchmark != "orl_faces"
    ):  # the paper chains' reward and audit read the encoder this recipe writes (ORL's: shipped)
        for stage in ("ddpo", "generate"):
            assert (
                yaml.safe_load((RECIPES_DIR / benchmark / f"{stage}.yaml").read_text())["encoder"] == config.output_dir
            )
    recognizer = yaml.safe_load((RECIPES_DIR / benchmark / "recognizer.yaml").read_text())
    assert config.target_dataset_name == recognizer["dataset_name"]
    assert config.target_dataset_config == recognizer["dataset_config"]
    assert (config.dataset_name, config.dataset_config) != (config.target_dataset_name, config.target_dataset_config)
    assert config.exclude_target_identities == (config.dataset_name == config.target_dataset_name == "casia_webface")
    assert config.channels == (1 if benchmark == "orl_faces" else 3)


def test_a_users_dataset_is_compared_by_identity_with_the_data_phi_trains_on(tmp_path, datasets_cache):
    """Registered benchmarks hold other people than each other; a user's folder may hold anyone, so a person in
    both the data phi trains on and the user's private target is refused before any image is read."""
    from PIL import Image

    from rlsyn_trl.trainers.encoder_pretraining import resolve_public_identities

    def folder(root, people):
        for person in people:
            for number in range(2):
                path = root / "train" / person / f"{number}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("L", (8, 8), 40 * number + len(person)).save(path)
        return str(root)

    target = folder(tmp_path / "mine", ["ada", "bo"])
    public = folder(tmp_path / "public", ["bo", "zed"])
    with pytest.raises(SettingsError, match=r"1 of its 2 identities \(bo, \.\.\.\) are identities of the private"):
        resolve_public_identities(tiny(tmp_path / "e", dataset_name=public, dataset_config=None,
                                       target_dataset_name=target))  # fmt: skip
    other = folder(tmp_path / "other", ["yan", "zed"])
    kept = resolve_public_identities(tiny(tmp_path / "e", dataset_name=other, dataset_config=None,
                                          target_dataset_name=target))  # fmt: skip
    assert kept.kept == ["yan", "zed"] and kept.num_target_identities == 2
