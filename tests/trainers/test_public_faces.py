"""Synthetic public faces in the priors and the encoder pre-training: trained on, listed in provenance and cards,
refused when the config is parsed without their extra."""

import sys

import datasets
import pytest
import torch
from conftest import FACES_INSTALL, needs_faces_extra
from PIL import Image

from rlsyn_trl.encoders import IdentityEncoder, load_encoder
from rlsyn_trl.generators import IdentityGenerator
from rlsyn_trl.provenance import read_provenance
from rlsyn_trl.recipes.pretrain_encoder import main as pretrain_encoder
from rlsyn_trl.recipes.pretrain_prior import main as train_priors
from rlsyn_trl.settings import SettingsError
from rlsyn_trl.trainers.encoder_pretraining import EncoderPretrainConfig
from rlsyn_trl.trainers.priors import PriorConfig
from rlsyn_trl.trainers.public_faces import with_public_faces

TINY_ENCODER = dict(resolution=16, encoder_widths=[8, 16], embedding_size=16, encoder_steps=4, encoder_batch_size=8,
                    checkpoint_every=2)  # fmt: skip


@pytest.fixture(scope="module")
def faces_cache(tmp_path_factory):
    """One datasets cache for the module: the two faces render once."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("faces_cache")
        patch.setattr("datasets.config.HF_DATASETS_CACHE", cache)
        yield cache


def check_public_data(record: dict, used_as: str, images: int) -> None:
    (faces,) = record["data"]["public_data"]
    assert (faces["dataset_name"], faces["dataset_config"], faces["num_faces"]) == ("synthetic_faces", "public", 2)
    assert faces["used_as"] == used_as and faces["num_identities"] == 2
    assert len(faces["train_images"]) == faces["num_train_images"] == images
    assert "non-commercial" in faces["licence"]


@needs_faces_extra
def test_encoder_recipe_trains_on_orl_and_the_faces_and_lists_them(tmp_path, faces_cache):
    config = EncoderPretrainConfig(output_dir=str(tmp_path / "encoder"), public_faces=2, public_faces_views=2,
                                   **TINY_ENCODER)  # fmt: skip
    summary = pretrain_encoder(config)
    assert summary["num_identities"] == 20 and summary["num_images"] == 200 and summary["steps_done"] == 4
    assert summary["public_faces"] == 2 and summary["public_face_images"] == 4
    assert load_encoder(str(tmp_path / "encoder")).encode_batched(torch.zeros(1, 1, 16, 16)).shape == (1, 16)
    record = read_provenance(tmp_path / "encoder")
    assert record["data"]["dataset_config"] == "public" and len(record["data"]["train_images"]) == 200
    check_public_data(record, "identities, one per face", 4)
    card = (tmp_path / "encoder" / "README.md").read_text()
    assert "Synthetic public faces: 2 people who do not exist (4 images" in card and "non-commercial" in card
    assert "license_name: stylegan2-ffhq-non-commercial" in card.split("---")[1]


@needs_faces_extra
def test_prior_recipe_takes_the_faces_as_identities_and_null_class(tmp_path, faces_cache):
    config = PriorConfig(output_dir=str(tmp_path), width=32, depth=2, heads=2, patch_size=4, generator_steps=2,
                         generator_batch_size=8, warmup_steps=1, grid_inference_steps=2, grid_per_identity=1,
                         use_lfw_faces=False, public_faces=2, **{**TINY_ENCODER, "encoder_steps": 2})  # fmt: skip
    summary = train_priors(config)
    assert summary["public_faces"] == 2 and summary["public_face_images"] == 2
    generator = IdentityGenerator.from_pretrained(tmp_path / "generator")
    assert generator.label_names == [f"s{i}" for i in range(1, 21)]  # the faces add no label: the null class
    IdentityEncoder.from_pretrained(tmp_path / "encoder")
    check_public_data(read_provenance(tmp_path / "encoder"), "identities, one per face", 2)
    check_public_data(read_provenance(tmp_path / "generator"), "null-class (unconditional) images", 2)


@pytest.mark.parametrize("config_class", [PriorConfig, EncoderPretrainConfig])
def test_faces_without_their_extra_are_refused_when_parsed(config_class, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(SettingsError, match=f"--public_faces 2: .*{FACES_INSTALL}"):
        config_class(public_faces=2)
    assert config_class(public_faces=0).public_faces == 0  # none asked for: nothing to install


@pytest.mark.parametrize(("flag", "value"), [("public_faces", -1), ("public_faces_views", 0)])
def test_bad_face_options_are_refused_naming_the_flag(flag, value):
    with pytest.raises(SettingsError, match=f"--public_faces|{flag}"):
        PriorConfig(**{"public_faces": 2, flag: value})


def test_faces_follow_the_kept_identities_as_new_ones():
    image = datasets.Image()
    blank = Image.new("L", (4, 4))
    train = datasets.Dataset.from_dict(
        {"image": [blank] * 3, "label": [0, 1, 2], "identity": ["a", "b", "c"]},
        features=datasets.Features({"image": image, "label": datasets.ClassLabel(names=["a", "b", "c"]),
                                    "identity": datasets.Value("string")}),
    )  # fmt: skip
    faces = datasets.Dataset.from_dict(
        {"image": [blank] * 4, "label": [0, 0, 1, 1]},
        features=datasets.Features({"image": image, "label": datasets.ClassLabel(names=["f0", "f1"])}),
    )
    relabel = torch.tensor([0, -1, 1])  # "b" is a target identity: dropped
    joined, joined_relabel = with_public_faces(train, relabel, faces)
    assert len(joined) == 7
    assert joined_relabel[torch.tensor(joined["label"])].tolist() == [0, -1, 1, 2, 2, 3, 3]


@needs_faces_extra
def test_the_faces_encoder_yaml_is_the_orl_one_plus_the_faces():
    from trl import TrlParser

    from rlsyn_trl.recipes import RECIPES_DIR

    def parsed(name):
        (config,) = TrlParser((EncoderPretrainConfig,)).parse_args_and_config(
            ["--config", str(RECIPES_DIR / "orl_faces" / name)]
        )
        return vars(config)

    orl, faces = parsed("encoder.yaml"), parsed("encoder_faces.yaml")
    changed = {key for key in orl if orl[key] != faces[key]}
    assert changed == {"output_dir", "public_faces", "public_faces_views"}
    assert (faces["public_faces"], faces["public_faces_views"]) == (1000, 3)
