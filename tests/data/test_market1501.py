"""Market-1501 builder on a tiny tree in the release's exact layout and file-name format."""

import re
from pathlib import Path

import datasets
import pytest
from PIL import Image

from rlsyn_trl.data import IDENTITY_BUILDERS, Market1501, check_identity_options, load_identity_dataset

TRAIN = ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c2s3_070952_01.jpg"]
GALLERY = ["0003_c1s1_001051_00.jpg", "0003_c4s2_002226_02.jpg", "0009_c6s1_004501_01.jpg"]
QUERY = ["0003_c2s1_000451_01.jpg", "0009_c1s1_002401_00.jpg"]
JUNK = "-1_c1s1_000401_03.jpg"
DISTRACTOR = "0000_c3s1_000151_01.jpg"


def save_image(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 16), (shade, 2 * shade % 256, 3)).save(path)


@pytest.fixture
def market_root(tmp_path):
    """Market-1501-v15.09.15 in miniature, with a junk and a distractor box in every folder and Windows/macOS litter."""
    root = tmp_path / "Market-1501-v15.09.15"
    for folder, names in {"bounding_box_train": TRAIN, "bounding_box_test": GALLERY, "query": QUERY}.items():
        for shade, name in enumerate([*names, JUNK, DISTRACTOR]):
            save_image(root / folder / name, shade * 40)
        (root / folder / "Thumbs.db").write_bytes(b"\x00not an image")
    (root / "query" / f"._{QUERY[0]}").write_bytes(b"macOS resource fork")
    save_image(root / "gt_bbox" / "0001_c1s1_001051_00.jpg")  # not part of the protocol: ignored
    return root


def build(root, tmp_path):
    builder = Market1501(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    return builder.as_dataset()


def test_standard_protocol_splits(market_root, tmp_path):
    ds = build(market_root, tmp_path)
    assert set(ds) == {"train", "query", "gallery"}
    assert ds["train"].features["label"].names == ["0002", "0007"]
    assert ds["train"]["label"][:] == [0, 0, 1]
    assert ds["train"]["person_id"][:] == [2, 2, 7] and ds["train"]["camera_id"][:] == [1, 2, 2]
    # Distractors (0000) are gallery-only hard negatives; junk (-1) is nowhere.
    assert ds["gallery"]["person_id"][:] == [0, 3, 3, 9]
    assert ds["gallery"]["camera_id"][:] == [3, 1, 4, 6]
    assert ds["query"]["person_id"][:] == [3, 9] and ds["query"]["camera_id"][:] == [2, 1]
    assert set(ds["query"]["label"][:]) == {-1} and set(ds["gallery"]["label"][:]) == {-1}
    assert ds["query"]["source"][:] == [f"query/{name}" for name in QUERY]
    assert ds["train"][0]["image"].size == (8, 16)


def test_images_are_stored_as_released(market_root, tmp_path):
    gallery = build(market_root, tmp_path)["gallery"].cast_column("image", datasets.Image(decode=False))
    for row in gallery:
        assert row["image"]["bytes"] == (market_root / row["source"]).read_bytes()


def test_registered_for_load_identity_dataset(market_root, tmp_path):
    assert IDENTITY_BUILDERS["market1501"] is Market1501
    ds = load_identity_dataset("market1501", data_dir=str(market_root), cache_dir=str(tmp_path / "cache"))
    assert ds["train"].num_rows == 3


def test_malformed_file_name_is_named(market_root, tmp_path):
    save_image(market_root / "bounding_box_test" / "0003_c1_000451.jpg")
    with pytest.raises(ValueError, match=r"Malformed file name .*bounding_box_test/0003_c1_000451\.jpg"):
        Market1501(data_dir=str(market_root), cache_dir=str(tmp_path / "cache"))


def test_missing_split_folder_is_named(market_root, tmp_path):
    for path in (market_root / "query").iterdir():
        path.unlink()
    (market_root / "query").rmdir()
    with pytest.raises(FileNotFoundError, match=r"'query'.*Market-1501-v15\.09\.15/query.*zheng-lab"):
        Market1501(data_dir=str(market_root), cache_dir=str(tmp_path / "cache"))


def test_missing_copy_gives_download_instructions(tmp_path):
    with pytest.raises(FileNotFoundError, match="No `data_dir` given.*project_reid.html"):
        Market1501(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="nowhere is not a folder.*project_reid.html"):
        Market1501(data_dir=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "cache"))


def test_corrupted_image_is_named(market_root, tmp_path):
    (market_root / "bounding_box_train" / TRAIN[1]).write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as error:
        build(market_root, tmp_path)
    assert TRAIN[1] in str(error.value.__cause__) and "corrupted" in str(error.value.__cause__)


def test_image_suffixes_are_matched_in_any_case(market_root, tmp_path):
    """Copies that went through Windows or a camera tool can have ``.JPG`` (or ``.jpeg``/``.png``): still images."""
    train = market_root / "bounding_box_train"
    (train / TRAIN[2]).rename(train / TRAIN[2].replace(".jpg", ".JPG"))
    save_image(train / "0011_c3s1_000551_02.Jpeg", 90)
    save_image(market_root / "query" / "0009_c5s1_002401_01.png", 70)
    ds = build(market_root, tmp_path)
    assert ds["train"]["source"][:] == [
        *(f"bounding_box_train/{name}" for name in TRAIN[:2]),
        "bounding_box_train/0007_c2s3_070952_01.JPG",
        "bounding_box_train/0011_c3s1_000551_02.Jpeg",
    ]
    assert ds["train"]["person_id"][:] == [2, 2, 7, 11] and ds["train"].features["label"].names[-1] == "0011"
    assert ds["query"]["person_id"][:] == [3, 9, 9] and ds["query"]["camera_id"][:] == [2, 1, 5]


@pytest.mark.parametrize("name", ["0003_c1_000451.JPG", "0003_C1S1_000451_00.jpg", "0003_c1s1_000451_00.jpg.png"])
def test_malformed_name_with_any_suffix_is_still_named(market_root, tmp_path, name):
    save_image(market_root / "bounding_box_test" / name)
    with pytest.raises(ValueError, match=rf"Malformed file name .*bounding_box_test/{re.escape(name)}: expected"):
        Market1501(data_dir=str(market_root), cache_dir=str(tmp_path / "cache"))


def test_registered_name_and_config():
    check_identity_options("market1501")  # a single config: no name needed
    with pytest.raises(ValueError, match=r"market1501 got unknown config 'detected': choose one of 'default'"):
        check_identity_options("market1501", "detected")
