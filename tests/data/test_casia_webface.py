"""CASIA-WebFace builder on a tiny image-folder tree (``0000045/001.jpg``) and its seeded subset selection."""

from pathlib import Path

import pytest
from PIL import Image

from rlsyn_trl.data import IDENTITY_BUILDERS, CasiaWebFace, load_identity_dataset
from rlsyn_trl.data.casia_webface import select_subset

IMAGE_COUNTS = {"0000045": 4, "0000099": 2, "0000100": 5, "0000102": 3, "0000105": 4}


def save_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), (90, 60, 30)).save(path)


@pytest.fixture
def casia_root(tmp_path):
    root = tmp_path / "CASIA-WebFace"
    for identity, count in IMAGE_COUNTS.items():
        for number in range(1, count + 1):
            save_image(root / identity / f"{number:03d}.jpg")
    (root / "0000045" / "Thumbs.db").write_bytes(b"\x00")
    (root / "casia_cleaned_list.txt").write_text("0000045/001.jpg 0\n")  # loose files next to identities: ignored
    return root


def build(root, tmp_path, **options):
    builder = CasiaWebFace(data_dir=str(root), cache_dir=str(tmp_path / "cache"), **options)
    builder.download_and_prepare()
    return builder.as_dataset()["train"]


def test_whole_set(casia_root, tmp_path):
    ds = build(casia_root, tmp_path)
    assert IDENTITY_BUILDERS["casia_webface"] is CasiaWebFace
    assert ds.features["label"].names == sorted(IMAGE_COUNTS)
    assert ds.num_rows == sum(IMAGE_COUNTS.values())
    assert ds[0]["source"] == "0000045/001.jpg" and ds[0]["identity"] == "0000045" and ds[0]["label"] == 0


def test_subset_is_reproducible_and_skips_small_identities(casia_root, tmp_path):
    options = {"num_identities": 3, "images_per_identity": 3, "seed": 7}
    first = build(casia_root, tmp_path, **options)
    again = load_identity_dataset(
        "casia_webface", data_dir=str(casia_root), cache_dir=str(tmp_path / "other"), **options
    )
    assert first["source"][:] == again["train"]["source"][:]
    names = first.features["label"].names
    assert len(names) == 3 and "0000099" not in names  # only 2 images: never eligible for 3 per identity
    for label in range(3):
        assert first["label"][:].count(label) == 3


def test_options_select_different_cached_datasets(casia_root, tmp_path):
    seeds = {seed: build(casia_root, tmp_path, num_identities=2, images_per_identity=2, seed=seed) for seed in (0, 1)}
    assert seeds[0]["source"][:] != seeds[1]["source"][:]
    assert build(casia_root, tmp_path, num_identities=1).num_rows in set(IMAGE_COUNTS.values())


def test_select_subset_by_hand():
    identities = {"b": ["1.jpg", "2.jpg"], "a": ["3.jpg", "1.jpg", "2.jpg"], "c": ["9.jpg"]}
    assert select_subset(identities, None, None, seed=0) == {
        "a": ["1.jpg", "2.jpg", "3.jpg"],
        "b": ["1.jpg", "2.jpg"],
        "c": ["9.jpg"],
    }
    subset = select_subset(identities, 2, 2, seed=0)
    assert list(subset) == ["a", "b"] and subset["b"] == ["1.jpg", "2.jpg"] and len(subset["a"]) == 2
    assert subset == select_subset(identities, 2, 2, seed=0)


def test_an_identity_with_too_few_photos_is_named_never_dropped_silently(caplog):
    """Every identity asked for: one with fewer photos than the shots is refused, with its name and the fix; a
    drawn subset skips it with a warning naming it."""
    identities = {"b": ["1.jpg", "2.jpg"], "a": ["3.jpg", "1.jpg", "2.jpg"], "c": ["9.jpg"], "empty": []}
    with pytest.raises(
        ValueError, match=r"1 identity folder\(s\) hold fewer than the 2 images .*: c \(1\)\..*lower shots to 1"
    ):
        select_subset(identities, None, 2, seed=0)
    with caplog.at_level("WARNING", logger="rlsyn_trl.data.casia_webface"):
        assert list(select_subset(identities, 1, 2, seed=0)) in (["a"], ["b"])
    assert "not eligible for the 1 drawn: c (1)" in caplog.text


def test_too_few_identities_raises(casia_root, tmp_path):
    with pytest.raises(ValueError, match="Only 3 of the 5 identity folders have at least 4 images, but 4"):
        CasiaWebFace(
            data_dir=str(casia_root), cache_dir=str(tmp_path / "cache"), num_identities=4, images_per_identity=4
        )
    with pytest.raises(ValueError, match="images_per_identity must be a positive integer"):
        select_subset({"a": ["1.jpg"]}, None, 0, seed=0)


def test_wrong_folder_gives_instructions(tmp_path):
    save_image(tmp_path / "flat" / "001.jpg")
    with pytest.raises(FileNotFoundError, match=r"No identity folder with images in .*flat.*0000045/001\.jpg"):
        CasiaWebFace(data_dir=str(tmp_path / "flat"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="No `data_dir` given.*CASIA-WebFace"):
        CasiaWebFace(cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_identities": 0}, r"casia_webface/default: num_identities=0 is not allowed; .*integer >= 1 or None"),
        ({"shots": -3}, r"images_per_identity=-3 is not allowed; images_per_identity \(.*the stages' `shots`\)"),
        ({"seed": -1}, r"casia_webface/default: seed=-1 is not allowed; .*integer >= 0"),
        ({"num_identities": 2.5}, r"num_identities=2\.5 is not allowed"),
    ],
)
def test_bad_options_fail_before_the_folders_are_listed(tmp_path, monkeypatch, options, message):
    """The whole set is about 494k files: a bad option must not wait for them to be listed."""

    def no_listing(folder):
        raise AssertionError(f"{folder} was listed for invalid options")

    monkeypatch.setattr("rlsyn_trl.data.casia_webface.list_images", no_listing)
    save_image(tmp_path / "casia" / "0000045" / "001.jpg")
    with pytest.raises(ValueError, match=message):
        load_identity_dataset(
            "casia_webface", data_dir=str(tmp_path / "casia"), cache_dir=str(tmp_path / "c"), **options
        )
    if "shots" not in options:
        with pytest.raises(ValueError, match=message):
            CasiaWebFace(data_dir=str(tmp_path / "casia"), cache_dir=str(tmp_path / "c"), **options)


def test_upper_case_suffixes_are_images(casia_root, tmp_path):
    (casia_root / "0000099" / "002.jpg").rename(casia_root / "0000099" / "002.JPG")
    save_image(casia_root / "0000099" / "003.Jpeg")
    sources = build(casia_root, tmp_path)["source"][:]
    assert {"0000099/001.jpg", "0000099/002.JPG", "0000099/003.Jpeg"} <= set(sources)


def test_the_cache_is_keyed_by_the_folder_not_by_the_data_dir_text(tmp_path, monkeypatch):
    """The same `--data_dir my_faces` in two working folders holds other people: each run gets its own; photos
    added to a folder after a first run are read, not served from the first build."""
    cache = str(tmp_path / "cache")
    people = {"A": ["alice", "bob"], "B": ["carol", "dave"]}
    for folder, names in people.items():
        for name in names:
            for number in (1, 2):
                save_image(tmp_path / folder / "my_faces" / name / f"{number}.jpg")
    for folder, names in people.items():
        monkeypatch.chdir(tmp_path / folder)
        dataset = load_identity_dataset("casia_webface", data_dir="my_faces", cache_dir=cache, shots=2, seed=0)
        assert dataset["train"].features["label"].names == names
    save_image(tmp_path / "B" / "my_faces" / "erin" / "1.jpg")
    save_image(tmp_path / "B" / "my_faces" / "erin" / "2.jpg")
    again = load_identity_dataset("casia_webface", data_dir="my_faces", cache_dir=cache, shots=2, seed=0)
    assert again["train"].features["label"].names == ["carol", "dave", "erin"]
