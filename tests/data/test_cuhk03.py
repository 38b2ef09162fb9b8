"""CUHK03-NP builder on a tiny ``cuhk03-np/{detected,labeled}`` tree with the release's ``PPPP_cC_N.png`` names."""

from pathlib import Path

import pytest
from PIL import Image

from rlsyn_trl.data import IDENTITY_BUILDERS, Cuhk03Np, load_identity_dataset

LAYOUT = {
    "bounding_box_train": ["0001_c1_1.png", "0001_c2_6.png", "0002_c1_1.png", "0002_c2_7.png"],
    "bounding_box_test": ["0003_c1_21.png", "0003_c1_23.png", "0004_c2_27.png"],
    "query": ["0003_c2_22.png", "0004_c1_24.png"],
}


def save_image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


@pytest.fixture
def cuhk_root(tmp_path):
    """The release in miniature; detected and labeled boxes differ in size so the configs can be told apart."""
    root = tmp_path / "cuhk03-np"
    for config, size in (("detected", (6, 12)), ("labeled", (8, 16))):
        for folder, names in LAYOUT.items():
            for name in names:
                save_image(root / config / folder / name, size)
    return root


def build(root, tmp_path, config):
    builder = Cuhk03Np(config_name=config, data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    return builder.as_dataset()


@pytest.mark.parametrize(("config", "size"), [("detected", (6, 12)), ("labeled", (8, 16))])
def test_both_box_sets(cuhk_root, tmp_path, config, size):
    ds = build(cuhk_root, tmp_path, config)
    assert IDENTITY_BUILDERS["cuhk03_np"] is Cuhk03Np
    assert ds["train"].features["label"].names == ["0001", "0002"]
    assert ds["train"]["label"][:] == [0, 0, 1, 1] and ds["train"]["camera_id"][:] == [1, 2, 1, 2]
    assert ds["gallery"]["person_id"][:] == [3, 3, 4] and ds["gallery"]["camera_id"][:] == [1, 1, 2]
    assert ds["query"]["person_id"][:] == [3, 4] and set(ds["query"]["label"][:]) == {-1}
    assert ds["query"]["source"][:] == [f"{config}/query/0003_c2_22.png", f"{config}/query/0004_c1_24.png"]
    assert ds["query"][0]["image"].size == size


def test_market_style_name_is_malformed(cuhk_root, tmp_path):
    save_image(cuhk_root / "labeled" / "query" / "0003_c1s1_000451_03.png", (8, 16))
    with pytest.raises(ValueError, match=r"Malformed file name .*labeled/query/0003_c1s1_000451_03\.png.*0001_c1_1"):
        Cuhk03Np(config_name="labeled", data_dir=str(cuhk_root), cache_dir=str(tmp_path / "cache"))


def test_missing_box_set_folder_is_named(cuhk_root, tmp_path):
    (cuhk_root / "labeled").rename(cuhk_root / "labelled")
    with pytest.raises(FileNotFoundError, match=r"'labeled' folder.*cuhk03-np/labeled is not a folder.*zhunzhong07"):
        Cuhk03Np(config_name="labeled", data_dir=str(cuhk_root), cache_dir=str(tmp_path / "cache"))


def test_empty_split_folder_is_named(cuhk_root, tmp_path):
    for path in (cuhk_root / "detected" / "bounding_box_test").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"No usable images in .*detected/bounding_box_test"):
        Cuhk03Np(config_name="detected", data_dir=str(cuhk_root), cache_dir=str(tmp_path / "cache"))


def test_missing_box_set_lists_the_configs(cuhk_root, tmp_path):
    """Without a config name the builder used to look for a 'default' folder; now it asks for detected or labeled."""
    message = r"cuhk03_np got no config name: choose one of 'detected', 'labeled' .*\"cuhk03_np\", \"detected\""
    with pytest.raises(ValueError, match=message):
        Cuhk03Np(data_dir=str(cuhk_root), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"unknown config 'labelled': choose one of 'detected', 'labeled'"):
        load_identity_dataset("cuhk03_np", "labelled", data_dir=str(cuhk_root), cache_dir=str(tmp_path / "cache"))


def test_image_suffixes_are_matched_in_any_case(cuhk_root, tmp_path):
    query = cuhk_root / "detected" / "query"
    (query / "0004_c1_24.png").rename(query / "0004_c1_24.PNG")
    save_image(query / "0004_c2_25.JPG", (6, 12))
    ds = build(cuhk_root, tmp_path, "detected")
    assert ds["query"]["source"][:] == [
        f"detected/query/{name}" for name in ("0003_c2_22.png", "0004_c1_24.PNG", "0004_c2_25.JPG")
    ]
    assert ds["query"]["camera_id"][:] == [2, 1, 2]
