import pytest
import torch
from conftest import put_in_hf_cache

from rlsyn_trl.generators import IdentityGenerator, class_embedders
from rlsyn_trl.generators.adapter import read_adapter_config
from rlsyn_trl.provenance import read_provenance
from rlsyn_trl.recipes.sft import main as train_cold_start
from rlsyn_trl.settings import SettingsError
from rlsyn_trl.trainers import ColdStartConfig, prepare_identity_generator

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

PRIVATE = [f"s{i}" for i in range(21, 41)]


def tiny_config(base, output_dir, **overrides) -> ColdStartConfig:
    values = dict(
        base_model=str(base),
        output_dir=str(output_dir),
        shots=1,
        max_steps=3,
        batch_size=8,
        warmup_steps=1,
        learning_rate=1e-2,
        lora_rank=2,
        lora_alpha=2,
        num_inference_steps=2,
        grid_per_identity=1,
        checkpoint_every=2,
    )
    values.update(overrides)
    return ColdStartConfig(**values)


@pytest.fixture(scope="module")
def trained(tiny_base_dir, tmp_path_factory, datasets_cache, monkeypatch_module):
    monkeypatch_module.setenv("HF_DATASETS_CACHE", datasets_cache)
    output = tmp_path_factory.mktemp("sft")
    summary = train_cold_start(tiny_config(tiny_base_dir, output))
    return IdentityGenerator.from_pretrained(output), summary, output


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_new_embedders_start_at_exactly_zero(tiny_base_dir):
    generator = prepare_identity_generator(str(tiny_base_dir), PRIVATE, lora_config=None)
    for embedder in class_embedders(generator.transformer):
        assert embedder.embedding_table.weight.shape[0] == 21
        assert torch.count_nonzero(embedder.embedding_table.weight) == 0
        assert embedder.embedding_table.weight.requires_grad
    frozen = [n for n, p in generator.transformer.named_parameters() if not p.requires_grad]
    assert frozen and all("class_embedder" not in n for n in frozen)


def test_frozen_backbone_is_bitwise_unchanged(trained, tiny_base_dir):
    generator, summary, _ = trained
    base = IdentityGenerator.from_pretrained(tiny_base_dir).transformer.state_dict()
    tuned = generator.transformer.state_dict()
    compared = 0
    for name, tensor in base.items():
        if "class_embedder" in name:
            continue
        key = (
            name
            if name in tuned
            else name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        )
        assert torch.equal(tuned[key], tensor), name
        compared += 1
    assert compared > 10 and summary["steps"] == 3
    assert any(torch.count_nonzero(e.embedding_table.weight) for e in class_embedders(generator.transformer))


def test_adapter_folder_and_round_trip(trained):
    generator, _, output = trained
    config = read_adapter_config(output)
    assert config["label_names"] == PRIVATE and config["lora"]["r"] == 2 and config["resolution"] == 32
    assert (output / "README.md").read_text().count("identity adapter") >= 1
    assert (output / "samples.png").is_file()
    loaded = IdentityGenerator.from_pretrained(output)
    a = generator.sample(["s21", "s40"], seed=3, num_inference_steps=3)
    b = loaded.sample(["s21", "s40"], seed=3, num_inference_steps=3)
    assert torch.equal(a, b)


def test_adapter_from_hub_id_in_local_cache(trained, tiny_base_dir, tmp_path, monkeypatch):
    _, _, output = trained
    cache = tmp_path / "hub"
    put_in_hf_cache(tiny_base_dir, "someone/tiny-dit", cache)
    adapter = tmp_path / "adapter"
    import json
    import shutil

    shutil.copytree(output, adapter, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((adapter / "identity_adapter_config.json").read_text())
    config["base_model"] = "someone/tiny-dit"
    (adapter / "identity_adapter_config.json").write_text(json.dumps(config))
    put_in_hf_cache(adapter, "someone/tiny-identities", cache)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    from_hub = IdentityGenerator.from_pretrained("someone/tiny-identities")
    local = IdentityGenerator.from_pretrained(output)
    assert from_hub.label_names == PRIVATE
    assert torch.equal(
        from_hub.sample(["s22"], seed=0, num_inference_steps=2), local.sample(["s22"], seed=0, num_inference_steps=2)
    )


def test_label_space_mismatch_is_reported(trained):
    generator, _, _ = trained
    with pytest.raises(KeyError, match="s1'? is not in this generator's label space"):
        generator.sample(["s1"], seed=0, num_inference_steps=2)


def test_unresolvable_base_model_offline(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="huggingface-cli download"):
        train_cold_start(tiny_config("facebook/DiT-XL-2-256", tmp_path / "out"))


def test_empty_train_split_is_an_error(tiny_base_dir, tmp_path, monkeypatch):
    import datasets

    from rlsyn_trl import data

    def empty(*args, **kwargs):
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=PRIVATE)})
        return datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict({"image": [], "label": []}, features=features)}
        )

    monkeypatch.setattr("rlsyn_trl.provenance.DataSplit.load", empty)
    assert data.load_identity_dataset is not empty
    with pytest.raises(ValueError, match="empty"):
        train_cold_start(tiny_config(tiny_base_dir, tmp_path / "out"))


def test_adapter_records_its_provenance(trained, tiny_base_dir):
    _, summary, output = trained
    record = read_provenance(output)
    assert record["stage"] == "cold_start"
    data = record["data"]
    assert (data["dataset_name"], data["dataset_config"], data["shots"], data["split_seed"]) == (
        "orl_faces",
        "private",
        1,
        0,
    )
    assert data["identities"] == PRIVATE and len(data["train_images"]) == 20 == data["num_train_images"]
    assert record["training"] == {"p_uncond": 0.1, "min_snr_gamma": 5.0}
    assert record["parent"]["id"] == str(tiny_base_dir) and record["parent"]["revision"].startswith("sha256:")
    assert summary["steps"] == 3 and not summary["stopped_by_time_budget"]


@pytest.mark.parametrize(
    "overrides, flag",
    [
        ({"batch_size": -1}, "batch_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"shots": 0}, "shots"),
        ({"split_seed": -1}, "split_seed"),
        ({"dataset_name": "orl"}, "dataset_name"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"push_to_hub": True}, "hub_model_id"),
        ({"lora_rank": -2}, "lora_rank"),
    ],
)
def test_bad_settings_name_the_flag_before_any_work(tmp_path, overrides, flag):
    with pytest.raises(SettingsError, match=f"--{flag}"):
        tiny_config(tmp_path, tmp_path / "out", **overrides)


def test_a_diverged_cold_start_stops_and_saves_no_adapter(tiny_base_dir, tmp_path, monkeypatch, datasets_cache):
    from rlsyn_trl.trainers.training import TrainingDiverged
    from rlsyn_trl.utils.model_sources import adapter_config_path

    monkeypatch.setenv("HF_DATASETS_CACHE", datasets_cache)
    config = tiny_config(tiny_base_dir, tmp_path / "out", learning_rate=1e30, max_steps=6, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match=r"cold_start loss at step \d+ is not finite.*Lower the learning rate"):
        train_cold_start(config)
    assert adapter_config_path(tmp_path / "out") is None and not (tmp_path / "out" / "provenance.json").exists()
    assert list((tmp_path / "out" / "checkpoints").glob("step-*"))  # the steps before it stay, as checkpoints


def test_a_batch_that_cannot_fit_is_refused_before_the_first_step(tiny_base_dir, tmp_path, monkeypatch, datasets_cache):
    import re

    import rlsyn_trl.trainers.cold_start as cold_start
    import rlsyn_trl.trainers.training as training

    monkeypatch.setenv("HF_DATASETS_CACHE", datasets_cache)
    monkeypatch.setattr(training, "available_memory", lambda device: 64 * 2**20)  # a machine with 64 MiB free
    steps = []
    monkeypatch.setattr(cold_start, "run_training_phase", lambda *args, **kwargs: steps.append(1) or 0)
    with pytest.raises(ValueError, match=r"--batch_size 100000: a training step would hold about .* GiB") as refused:
        train_cold_start(tiny_config(tiny_base_dir, tmp_path / "out", batch_size=100_000))
    assert not steps
    fits = int(re.search(r"Use --batch_size (\d+) or less", str(refused.value)).group(1))
    assert 1 <= fits < 100_000
    train_cold_start(tiny_config(tiny_base_dir, tmp_path / "fits", batch_size=fits))  # the suggestion is accepted
    assert steps == [1]


def test_a_resume_with_another_split_is_refused_naming_what_changed(
    tiny_base_dir, tmp_path, monkeypatch, datasets_cache
):
    """Split 0's checkpoints continued under split 1 gave an adapter that saw split 0 and said split 1."""
    monkeypatch.setenv("HF_DATASETS_CACHE", datasets_cache)
    output = tmp_path / "r"
    train_cold_start(tiny_config(tiny_base_dir, output, max_steps=2, checkpoint_every=1, split_seed=0))
    with pytest.raises(ValueError, match=r"Cannot resume from .*step-2: .*split_seed: 0 there, 1 now.*train_images"):
        train_cold_start(tiny_config(tiny_base_dir, output, max_steps=3, resume=True, split_seed=1))
    summary = train_cold_start(tiny_config(tiny_base_dir, output, max_steps=3, resume=True, split_seed=0))
    assert summary["steps"] == 3  # the same run's settings, more steps: resumed
