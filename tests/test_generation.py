"""Synthetic dataset generation: schema and labels, resumable shards, run fingerprints and the error cases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from synthetic_fixtures import (
    IDENTITIES,
    PER_IDENTITY,
    PRIVATE_NAMES,
    build_tiny_adapter,
    build_tiny_models,
    plant_real_copy,
    tiny_config,
    tiny_settings,
)

from rlsyn_trl.data import preprocess_images
from rlsyn_trl.encoders import IdentityEncoder, IdentityEncoderConfig, load_encoder
from rlsyn_trl.generation import GenerationConfig, shard_seed
from rlsyn_trl.generation import shards as generation_shards
from rlsyn_trl.generation.audit import pixel_distances
from rlsyn_trl.generation.evaluator import consistent_with
from rlsyn_trl.provenance import ProvenanceError, read_provenance, stage_record, write_provenance
from rlsyn_trl.recipes import generate as generate_recipe
from rlsyn_trl.recipes.generate import main as generate_synthetic_dataset
from rlsyn_trl.settings import SettingsError

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def make_config(models, datasets_cache, tmp_path):
    return lambda **overrides: tiny_config(models, datasets_cache, tmp_path / "run", **overrides)


@pytest.fixture(scope="module")
def reference(models, datasets_cache, tmp_path_factory):
    """One uninterrupted run: the dataset every resumed run must reproduce sample for sample."""
    config = tiny_config(models, datasets_cache, tmp_path_factory.mktemp("reference") / "run")
    dataset, summary = generate_synthetic_dataset(config)
    return config, dataset, summary


def assert_same_samples(dataset: datasets.Dataset, expected: datasets.Dataset) -> None:
    """Exactly N per identity, no duplicates, and the very images of the uninterrupted run."""
    assert Counter(dataset["identity"]) == {name: PER_IDENTITY for name in IDENTITIES}
    assert sorted(dataset["sample_id"]) == list(range(len(IDENTITIES) * PER_IDENTITY))
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    expected_raw = expected.cast_column("image", datasets.Image(decode=False))
    assert [image["bytes"] for image in raw["image"]] == [image["bytes"] for image in expected_raw["image"]]
    assert dataset["seed"] == expected["seed"]


def test_schema_labels_and_outputs(reference, orl_private):
    config, dataset, summary = reference
    assert list(dataset.features) == [
        "image",
        "label",
        "identity",
        "r_sem",
        "r_cov",
        "r_exp",
        "reward",
        "nn_real_distance",
        "nn_real_feature_distance",
        "nn_real_index",
        "nn_real_feature_index",
        "memorized",
        "memorized_by",
        "identity_consistent",
        "face_detected",
        "seed",
        "sample_id",
        "generator_id",
        "generator_revision",
    ]
    assert dataset.features["label"].names == orl_private["train"].features["label"].names
    assert isinstance(dataset.features["image"], datasets.Image)
    assert dataset.features["memorized"].dtype == "bool" and dataset.features["face_detected"].dtype == "bool"
    assert len(dataset) == len(IDENTITIES) * PER_IDENTITY
    assert [dataset.features["label"].int2str(label) for label in dataset["label"]] == dataset["identity"]
    assert dataset[0]["image"].size == (16, 16)
    assert set(dataset["generator_id"]) == {config.adapter}
    assert dataset[0]["generator_revision"].startswith("sha256:")
    # Each shard has its own seed, derived from the base seed and its index alone.
    assert dataset["seed"] == [shard_seed(0, sample // 4) for sample in range(len(dataset))]
    assert summary["audit"]["memorization"]["rate"] == pytest.approx(sum(dataset["memorized"]) / len(dataset))
    assert summary["identity_consistency"] == pytest.approx(sum(dataset["identity_consistent"]) / len(dataset))
    assert summary["reference"]["num_images"] == len(orl_private["test"])
    assert summary["audit"]["thresholds"]["source"] == "private"  # 2 shots: the training pairs themselves

    output = Path(config.output_dir)
    from_disk = datasets.load_from_disk(str(output / "dataset"))
    assert from_disk.features == dataset.features and from_disk["sample_id"] == dataset["sample_id"]
    hub = datasets.load_dataset(str(output / "hub"), split="train", cache_dir=str(output / "cache"))
    assert hub.features == dataset.features and hub["reward"] == pytest.approx(dataset["reward"])
    card = (output / "hub" / "README.md").read_text()
    assert "Memorisation rate" in card and "Reference floor" in card and "5th percentile" in card
    assert json.loads((output / "audit.json").read_text())["num_samples"] == len(dataset)
    for folder in ("dataset", "hub"):  # the thresholds travel with the published dataset
        assert json.loads((output / folder / "audit.json").read_text())["audit"] == summary["audit"]


def test_a_copy_of_a_training_photo_is_flagged_with_its_nearest_real_image(make_config, orl_private):
    """The audit keeps the nearest real image's row and the flagging space, so a reader can see the pair."""
    config = make_config()
    generate_synthetic_dataset(config)
    row = orl_private["train"]["label"].index(orl_private["train"].features["label"].str2int("s22"))
    plant_real_copy(Path(config.output_dir), orl_private["train"], row, sample_id=1)
    dataset, _ = generate_synthetic_dataset(config)  # every shard exists: only the scoring runs again
    copy = dataset[1]
    assert copy["memorized"] and "pixel" in copy["memorized_by"]
    assert copy["nn_real_index"] == row and copy["nn_real_distance"] < 0.01
    assert all(bool(flag) == bool(by) for flag, by in zip(dataset["memorized"], dataset["memorized_by"]))
    assert max([*dataset["nn_real_index"], *dataset["nn_real_feature_index"]]) < len(orl_private["train"])


def test_one_shot_threshold_comes_from_public_identities(make_config, tmp_path):
    one_shot = build_tiny_adapter(tmp_path / "one_shot", PRIVATE_NAMES, shots=1)
    dataset, summary = generate_synthetic_dataset(make_config(adapter=str(one_shot), identities=["s21"]))
    assert summary["audit"]["thresholds"]["source"] == "public"
    assert summary["shots"] == 1 and len(dataset) == PER_IDENTITY
    card = (Path(make_config().output_dir) / "hub" / "README.md").read_text()
    assert "PUBLIC identities" in card


def test_split_is_read_from_the_adapter_and_a_contradiction_is_refused(make_config, reference):
    _, _, summary = reference
    assert (summary["shots"], summary["split_seed"]) == (2, 0)  # recorded by the adapter, not asked again
    with pytest.raises(ProvenanceError, match=r"--shots 1 contradicts the adapter .*shots=2"):
        generate_synthetic_dataset(make_config(shots=1))


def test_an_adapter_without_provenance_is_refused_unless_explicitly_accepted(models, make_config, tmp_path):
    """Without provenance.json the reward settings, split and training photos are unknown: refused, naming the file
    and the flag; with the flag the split comes from the adapter's config and the parent records no provenance."""
    bare = tmp_path / "bare"
    shutil.copytree(models["adapter"], bare)
    (bare / "provenance.json").unlink()
    with pytest.raises(ProvenanceError, match=r"has no provenance.json.*--allow_unrecorded_input true"):
        generate_synthetic_dataset(make_config(adapter=str(bare)))
    assert not (tmp_path / "run").exists()  # refused before anything was written
    _, summary = generate_synthetic_dataset(make_config(adapter=str(bare), allow_unrecorded_input=True))
    assert (summary["shots"], summary["split_seed"]) == (2, 0)
    assert read_provenance(tmp_path / "run" / "dataset")["parent"]["provenance"] is None


def test_a_policy_is_scored_with_the_reward_it_was_trained_with(models, make_config, tmp_path):
    """A DDPO policy records its reward; generation scores with it and refuses a different one."""
    policy = tmp_path / "policy"
    shutil.copytree(models["adapter"], policy)
    trained = {"encoder": str(models["encoder"]), "weights": [1.0, 0.75, 0.25], "alpha": 0.5, "sigma": None,
               "eps": 0.1, "tau": 0.25}  # fmt: skip
    write_provenance(policy, stage_record("ddpo", {"shots": 2, "split_seed": 0}, reward=trained))
    with pytest.raises(ProvenanceError, match=r"--reward_tau 0.5 differs from the adapter .*tau=0.25"):
        generate_synthetic_dataset(make_config(adapter=str(policy), reward_tau=0.5))
    _, summary = generate_synthetic_dataset(make_config(adapter=str(policy)))
    record = read_provenance(tmp_path / "run" / "dataset")
    assert record["reward"] == trained and summary["reward_settings"] == trained
    assert record["parent"]["provenance"]["stage"] == "ddpo" and record["data"]["shots"] == 2


def test_reference_strength_one_reproduces_the_noise_run_and_is_recorded(make_config, reference):
    """s = 1 is the pure-noise chain: the same seed gives the very images of the run without reference starts."""
    dataset, summary = generate_synthetic_dataset(make_config(reference_strength="1"))
    assert_same_samples(dataset, reference[1])
    assert summary["reference_strength"] == 1.0
    record = read_provenance(Path(make_config().output_dir) / "dataset")
    assert record["sampler"]["reference_strength"] == 1.0
    assert read_provenance(Path(reference[0].output_dir))["sampler"].get("reference_strength") is None
    card = (Path(make_config().output_dir) / "hub" / "README.md").read_text()
    assert "reference strength 1.0" in card
    with pytest.raises(FileExistsError, match="reference_strength: 1.0 -> 0.5"):
        generate_synthetic_dataset(make_config(reference_strength=0.5))


def test_a_guidance_interval_changes_the_samples_and_is_recorded_in_the_runs_fingerprint(make_config, reference):
    """Guidance 2 at the noisier of the 2 steps (t = 999, 499) only: other images than guidance at both, recorded,
    and a change of the interval is a different run."""
    dataset, summary = generate_synthetic_dataset(make_config(guidance_interval="0.6,1"))
    raw = dataset.cast_column("image", datasets.Image(decode=False))["image"]
    expected = reference[1].cast_column("image", datasets.Image(decode=False))["image"]
    assert all(a["bytes"] != b["bytes"] for a, b in zip(raw, expected, strict=True))
    record = read_provenance(Path(make_config().output_dir) / "dataset")
    assert record["sampler"]["guidance_interval"] == [0.6, 1.0] and record["sampler"]["guidance_scale"] == 2.0
    assert "guidance_interval" not in read_provenance(Path(reference[0].output_dir))["sampler"]
    with pytest.raises(FileExistsError, match="guidance_interval"):
        generate_synthetic_dataset(make_config(guidance_interval="0.4,1"))


def test_a_low_reference_strength_returns_the_real_photos_and_the_audit_flags_them(make_config, orl_private):
    """With 2 DDIM steps, s = 0.3 leaves no step to run: every sample IS one of its identity's training photos."""
    dataset, summary = generate_synthetic_dataset(make_config(reference_strength=0.3))
    assert summary["audit"]["memorization"]["rate"] == 1.0 and all(dataset["memorized"])
    assert max(dataset["nn_real_distance"]) == 0.0
    train = orl_private["train"]
    real = preprocess_images(list(train["image"]), 16, 1)
    distances = pixel_distances(preprocess_images(list(dataset["image"]), 16, 1), real)
    own = torch.tensor(dataset["label"])[:, None] == torch.tensor(train["label"])[None, :]
    assert (distances.masked_fill(~own, float("inf")).min(dim=1).values == 0).all()  # a photo of its own identity
    assert summary["reference"]["memorization"]["rate"] < 1.0  # held-out photos are not flagged wholesale


def test_the_evaluator_must_not_be_phi(make_config, models, tmp_path):
    copy = tmp_path / "phi_copy"
    shutil.copytree(models["encoder"], copy)
    for evaluator in (str(models["encoder"]), str(copy)):  # the same folder, or the same weights elsewhere
        with pytest.raises(SettingsError, match="--evaluator .* is the reward's feature extractor phi"):
            generate_synthetic_dataset(make_config(evaluator=evaluator))
    assert not (tmp_path / "run" / "manifest.json").exists()  # refused before any sampling


def test_identity_consistency_is_also_reported_by_an_independent_evaluator(make_config, orl_private, tmp_path):
    torch.manual_seed(1)
    config = IdentityEncoderConfig(num_channels=1, image_size=24, widths=[6, 12], embedding_size=8)
    IdentityEncoder(config).eval().save_pretrained(tmp_path / "evaluator")
    dataset, summary = generate_synthetic_dataset(make_config(evaluator=str(tmp_path / "evaluator")))
    evaluator = load_encoder(str(tmp_path / "evaluator"))
    train = orl_private
    expected = consistent_with(
        evaluator,
        preprocess_images(list(dataset["image"]), 24, 1),
        torch.tensor(dataset["label"]),
        preprocess_images(list(train["train"]["image"]), 24, 1),
        torch.tensor(train["train"]["label"]),
    )
    assert summary["evaluator"]["id"] == str(tmp_path / "evaluator")
    assert summary["evaluator"]["identity_consistency"] == pytest.approx(expected.float().mean().item())
    assert 0 <= summary["reference"]["evaluator_identity_consistency"] <= 1
    card = (Path(make_config().output_dir) / "hub" / "README.md").read_text()
    assert "independent evaluator" in card and "reward encoder phi" in card
    assert read_provenance(Path(make_config().output_dir))["evaluator"]["id"] == str(tmp_path / "evaluator")


def test_resume_after_a_kill_between_shards(make_config, reference, monkeypatch):
    write = generation_shards._write_shard
    calls = []

    def killed_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(args[0])
        write(*args, **kwargs)

    monkeypatch.setattr(generation_shards, "_write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(make_config())
    shards = Path(make_config().output_dir) / "shards"
    assert sorted(path.name for path in shards.iterdir()) == ["shard-00000.parquet", "shard-00001.parquet"]

    monkeypatch.setattr(generation_shards, "_write_shard", write)
    dataset, _ = generate_synthetic_dataset(make_config())
    assert_same_samples(dataset, reference[1])


def test_resume_after_a_kill_inside_a_shard_write(make_config, reference, monkeypatch):
    write_table = generation_shards.pq.write_table
    calls = []

    def killed_in_second_write(table, where, **kwargs):
        calls.append(where)
        if len(calls) < 2:
            return write_table(table, where, **kwargs)
        Path(where).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(generation_shards.pq, "write_table", killed_in_second_write)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(make_config())
    shards = Path(make_config().output_dir) / "shards"
    # The half-written shard never appears under its final name.
    assert sorted(path.name for path in shards.iterdir()) == ["shard-00000.parquet", "shard-00001.parquet.0.tmp"]

    monkeypatch.setattr(generation_shards.pq, "write_table", write_table)
    dataset, _ = generate_synthetic_dataset(make_config())
    assert not list(shards.glob("*.tmp"))
    assert_same_samples(dataset, reference[1])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_write_the_dataset_one_process_writes(models, datasets_cache, reference, tmp_path):
    """`accelerate launch` on 2 processes: each samples every other shard, the main one scores and writes; the
    dataset equals the 1-process run's row for row (accelerate 1.15 needs --multi_gpu + ACCELERATE_USE_CPU=1 for
    two CPU processes)."""
    settings = tiny_settings(models, datasets_cache, tmp_path / "run")
    recipe = tmp_path / "generate.yaml"
    recipe.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    done = subprocess.run(
        [*launch, generate_recipe.__file__, "--config", str(recipe)], env=env, timeout=300, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    dataset = datasets.load_from_disk(str(tmp_path / "run" / "dataset"))
    assert_same_samples(dataset, reference[1])
    assert dataset["reward"] == pytest.approx(reference[1]["reward"], abs=1e-6)
    assert dataset["memorized"] == reference[1]["memorized"]
    assert (tmp_path / "run" / "provenance.json").is_file() and not list((tmp_path / "run").rglob("*.tmp"))


def test_a_finished_run_is_reused_not_resampled(reference, monkeypatch):
    config, dataset, _ = reference
    monkeypatch.setattr(generation_shards, "_write_shard", lambda *args: pytest.fail("a complete run sampled again"))
    again, _ = generate_synthetic_dataset(config)
    assert_same_samples(again, dataset)


def test_a_folder_holding_another_run_is_refused(make_config, reference):
    config = reference[0]
    with pytest.raises(FileExistsError, match="different generation run.*seed: 0 -> 1"):
        generate_synthetic_dataset(replace(config, seed=1))
    with pytest.raises(FileExistsError, match="samples_per_identity"):
        generate_synthetic_dataset(replace(config, samples_per_identity=4))


def test_label_space_mismatch_is_refused(make_config, tmp_path):
    with pytest.raises(ValueError, match=r"\['s99'\] are not labels of the real data"):
        generate_synthetic_dataset(make_config(identities=["s21", "s99"]))
    other = build_tiny_adapter(tmp_path / "other", ["s1", "s2"])
    with pytest.raises(ValueError, match="cannot generate identities.*label space"):
        generate_synthetic_dataset(make_config(adapter=str(other)))
    assert not (tmp_path / "run" / "manifest.json").exists()  # refused before anything was written


def test_no_write_permission_is_a_clear_error(make_config, monkeypatch, tmp_path):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(generation_shards.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match="Cannot write to the output folder .*run"):
        generate_synthetic_dataset(make_config())


def test_config_validation():
    for overrides, flag in (
        ({"samples_per_identity": 1}, "samples_per_identity"),
        ({"push_to_hub": True}, "hub_dataset_id"),
        ({"memorization_criterion": "any"}, "memorization_criterion"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"eta": 2.0}, "eta"),
        ({"reward_weights": [1.0, 1.0]}, "reward_weights"),
        ({"split_seed": -1}, "split_seed"),
        ({"reference_strength": "0"}, "reference_strength"),
        ({"reference_strength": [0.9, 0.4]}, "reference_strength"),
        ({"guidance_interval": "0.5"}, "guidance_interval"),
    ):
        with pytest.raises(SettingsError, match=f"--{flag} "):
            GenerationConfig(**overrides)
    assert GenerationConfig(reference_strength="0.5, 0.8").reference_strength == [0.5, 0.8]
    assert GenerationConfig(reference_strength="0.6").sampler_options()["reference_strength"] == 0.6
    assert "reference_strength" not in GenerationConfig().sampler_options()


def test_the_orl_recipe_parses_into_a_config():
    from trl import TrlParser

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "orl_faces" / "generate.yaml"
    (config,) = TrlParser((GenerationConfig,)).parse_args_and_config(["--config", str(recipe), "--seed", "3"])
    assert config.samples_per_identity == 50 and config.seed == 3 and config.hub_private
    assert config.shots is None and config.memorization_criterion == "either" and config.max_memorization_rate == 0.05


@pytest.mark.parametrize("fill", [float("nan"), -1.0])
def test_non_finite_or_flat_samples_are_refused_before_any_shard_is_written(make_config, monkeypatch, fill):
    """A diverged adapter samples NaN (written as black squares) or one flat colour: generation stops, naming it."""
    from rlsyn_trl.generators import IdentityGenerator

    real_sample = IdentityGenerator.sample

    def broken(self, identities, **options):
        images = real_sample(self, identities, **options)
        images[1] = fill
        return images

    monkeypatch.setattr(IdentityGenerator, "sample", broken)
    config = make_config()
    with pytest.raises(
        ValueError, match=r"1 of \d+ samples \(ids \[1\]\) are non-finite or one flat colour: the adapter"
    ):
        generate_synthetic_dataset(config)
    assert not list((Path(config.output_dir) / "shards").glob("*.parquet"))
