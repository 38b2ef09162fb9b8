import json
from pathlib import Path

import pytest
import torch
from trl import TrlParser

from rlsyn_trl.encoders import IdentityEncoder
from rlsyn_trl.generators import IdentityGenerator
from rlsyn_trl.provenance import lineage, read_provenance
from rlsyn_trl.recipes.pretrain_prior import main as train_priors
from rlsyn_trl.recipes.sft import main as train_cold_start
from rlsyn_trl.settings import SettingsError
from rlsyn_trl.trainers import ColdStartConfig
from rlsyn_trl.trainers.priors import PriorConfig

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "orl_faces"


def tiny_prior_config(output_dir, **overrides) -> PriorConfig:
    values = dict(
        output_dir=str(output_dir),
        resolution=16,
        width=32,
        depth=2,
        heads=2,
        patch_size=4,
        generator_steps=4,
        generator_batch_size=8,
        warmup_steps=1,
        encoder_steps=4,
        encoder_batch_size=8,
        encoder_widths=[8, 16],
        embedding_size=16,
        checkpoint_every=2,
        grid_inference_steps=2,
        grid_per_identity=1,
        use_lfw_faces=True,
    )
    values.update(overrides)
    return PriorConfig(**values)


def test_short_prior_run_writes_loadable_models_with_provenance(tmp_path):
    summary = train_priors(tiny_prior_config(tmp_path))
    generator = IdentityGenerator.from_pretrained(tmp_path / "generator")
    encoder = IdentityEncoder.from_pretrained(tmp_path / "encoder")
    assert generator.label_names == [f"s{i}" for i in range(1, 21)] and generator.resolution == 16
    assert encoder.encode_batched(torch.zeros(2, 1, 16, 16)).norm(dim=1).allclose(torch.ones(2), atol=1e-5)
    assert (tmp_path / "prior_samples.png").is_file()
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["real_face_detection_rate"] > 0.3
    assert (written["generator_steps_done"], written["generator_steps"]) == (4, 4)
    assert written["generator_stopped_by_time_budget"] is False
    assert 0 <= summary["self_consistency"] <= 1 and 0 <= summary["face_detection_rate"] <= 1

    records = {model: read_provenance(tmp_path / model) for model in ("generator", "encoder")}
    for model, record in records.items():
        assert record["stage"] == "prior" and record["model"] == model and record["parent"] is None
        data = record["data"]
        assert (data["dataset_name"], data["dataset_config"]) == ("orl_faces", "public")
        assert data["identities"] == [f"s{i}" for i in range(1, 21)] and data["num_train_images"] == 200
        assert len(data["train_images"]) == 200 and data["shots"] is None and data["split_seed"] is None
    assert records["generator"]["data"] == records["encoder"]["data"] and records["generator"]["steps"] == 4


def test_resume_continues_from_checkpoint_and_matches_uninterrupted(tmp_path):
    full = tmp_path / "full"
    train_priors(tiny_prior_config(full, train_encoder=False))
    split = tmp_path / "split"
    cut = train_priors(tiny_prior_config(split, train_encoder=False, generator_steps=4, max_minutes=0.0))
    checkpoints = sorted(p.name for p in (split / "checkpoints" / "generator").iterdir())
    assert checkpoints == ["step-1"]  # stopped after the first step by the time budget
    assert (cut["generator_steps_done"], cut["generator_steps"], cut["generator_stopped_by_time_budget"]) == (
        1,
        4,
        True,
    )
    assert json.loads((split / "summary.json").read_text())["generator_stopped_by_time_budget"] is True
    resumed = train_priors(tiny_prior_config(split, train_encoder=False, resume=True))
    assert resumed["generator_steps_done"] == 4 and not resumed["generator_stopped_by_time_budget"]
    a = IdentityGenerator.from_pretrained(full / "generator").transformer.state_dict()
    b = IdentityGenerator.from_pretrained(split / "generator").transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cold_start_on_the_prior_starts_its_chain_there(tmp_path):
    prior = tmp_path / "prior"
    train_priors(tiny_prior_config(prior, train_encoder=False, generator_steps=1))
    sft = tmp_path / "sft"
    train_cold_start(
        ColdStartConfig(
            base_model=str(prior / "generator"),
            output_dir=str(sft),
            shots=1,
            max_steps=1,
            batch_size=4,
            warmup_steps=0,
            num_inference_steps=1,
            grid_per_identity=1,
        )
    )
    chain = lineage(read_provenance(sft))
    assert [record["stage"] for record in chain] == ["cold_start", "prior"]
    assert chain[1]["data"]["dataset_config"] == "public" and chain[1]["model"] == "generator"
    assert not set(chain[0]["data"]["identities"]) & set(chain[1]["data"]["identities"])


def test_a_prior_continued_from_a_saved_one_starts_from_its_weights_and_chain(tmp_path):
    first = tmp_path / "first"
    train_priors(tiny_prior_config(first, train_encoder=False, generator_steps=1, seed=1))
    saved = IdentityGenerator.from_pretrained(first / "generator").transformer.state_dict()
    continued = tmp_path / "continued"
    config = tiny_prior_config(
        continued, train_encoder=False, generator_steps=1, init_generator=str(first / "generator")
    )
    summary = train_priors(config)
    assert summary["generator_steps_done"] == 1
    after = IdentityGenerator.from_pretrained(continued / "generator").transformer.state_dict()
    fresh = tmp_path / "fresh"
    train_priors(tiny_prior_config(fresh, train_encoder=False, generator_steps=1))
    scratch = IdentityGenerator.from_pretrained(fresh / "generator").transformer.state_dict()
    # one small step from the saved weights stays near them; a new DiT (another seed) lands elsewhere
    distance = sum((after[k].float() - saved[k].float()).norm() for k in saved)
    assert distance < sum((scratch[k].float() - saved[k].float()).norm() for k in saved) / 4
    chain = lineage(read_provenance(continued / "generator"))
    assert [record["stage"] for record in chain] == ["prior", "prior"]
    assert read_provenance(continued / "generator")["parent"]["id"] == str(first / "generator")

    with pytest.raises(SettingsError, match="--train_generator false skips"):
        tiny_prior_config(tmp_path / "none", train_generator=False, init_generator=config.init_generator)
    with pytest.raises(SettingsError, match="--init_generator .* has width 32: set --width 32"):
        train_priors(
            tiny_prior_config(tmp_path / "wider", train_encoder=False, width=64, init_generator=config.init_generator)
        )


def test_private_identities_are_refused_before_any_work(tmp_path):
    with pytest.raises(SettingsError, match="--dataset_config 'private'.*--dataset_config public"):
        tiny_prior_config(tmp_path, dataset_config="private")
    # A config edited after parsing is refused by the recipe before it loads or writes anything.
    config = tiny_prior_config(tmp_path / "run")
    config.dataset_config = "private"
    with pytest.raises(SettingsError, match="--dataset_config 'private'"):
        train_priors(config)
    assert not (tmp_path / "run").exists()


def test_unset_dataset_config_means_the_public_one():
    # orl_faces' builder defaults to its private config: the priors must not fall back to it.
    assert PriorConfig(dataset_config=None).dataset_config == "public"
    assert PriorConfig(dataset_name=None, dataset_config=None).dataset_name == "orl_faces"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("generator_steps", 0),
        ("encoder_batch_size", -1),
        ("generator_lr", 0.0),
        ("max_minutes", -1.0),
        ("shots", 2),
        ("mixed_precision", "fp64"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(tmp_path, flag, value):
    with pytest.raises(SettingsError, match=f"--{flag} "):
        tiny_prior_config(tmp_path, **{flag: value})


@pytest.mark.parametrize("recipe", ["prior", "prior_full"])
def test_prior_yamls_parse_into_the_config(recipe):
    (config,) = TrlParser((PriorConfig,)).parse_args_and_config(["--config", str(RECIPES / f"{recipe}.yaml")])
    assert (config.dataset_name, config.dataset_config) == ("orl_faces", "public")
    assert config.mixed_precision == "auto" and config.shots is None and config.generator_steps > 0
    with pytest.raises(SettingsError, match="--dataset_config"):
        TrlParser((PriorConfig,)).parse_args_and_config(
            ["--config", str(RECIPES / f"{recipe}.yaml"), "--dataset_config", "private"]
        )


def test_null_class_share_repeats_the_identities_not_the_faces():
    """1,000 synthetic faces beside 200 labelled photos: the cap keeps the identities in the generator's batches."""
    from rlsyn_trl.trainers.priors import cap_null_share

    images = torch.arange(16).float().view(16, 1, 1, 1)
    labels = torch.tensor([0, 1, 0, 1] + [2] * 12)
    capped_images, capped_labels = cap_null_share(images, labels, 2, 0.5)
    assert (capped_labels == 2).sum() == 12 and len(capped_labels) == 24  # null images half of the data, none lost
    named = capped_images[capped_labels != 2].flatten().tolist()
    assert sorted(named) == sorted([0.0, 1.0, 2.0, 3.0] * 3)  # every identity image three times
    assert capped_images[capped_labels == 2].flatten().tolist() == list(range(4, 16))
    uneven_images, uneven_labels = cap_null_share(images, labels, 2, 0.6)  # 8 identity images: 2 copies
    assert (uneven_labels != 2).sum() == 8 and (uneven_labels == 2).float().mean() <= 0.6
    for share in (None, 0.8):  # no cap, or the data already under it
        same_images, same_labels = cap_null_share(images, labels, 2, share)
        assert same_images is images and same_labels is labels
    with pytest.raises(ValueError, match="null_class_share"):
        tiny_prior_config(Path("unused"), null_class_share=1.0)
