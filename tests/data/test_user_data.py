"""A user's identity data as `--dataset_name`: a local folder in the Hub layout (Parquet shards and a card's
``configs:``), an ``imagefolder`` tree, and a Hub dataset id read from the Hugging Face cache, with the stages'
split options, the refusals, and a cold start -> generation run whose provenance names the data and its revision."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import put_in_hf_cache
from PIL import Image
from synthetic_fixtures import build_tiny_encoder

from rlsyn_trl.data import identity_names, load_identity_dataset
from rlsyn_trl.data.casia_webface import select_subset
from rlsyn_trl.provenance import DataSplit, ProvenanceError, resolve_data_split
from rlsyn_trl.settings import DataSplitSettings, SettingsError

torch.set_num_threads(1)

PEOPLE = {"ada": 4, "bo": 3, "cy": 5}
COMMIT = "c" * 40


def face(person: int, number: int) -> bytes:
    """A distinct small PNG per (person, number): the fingerprints tell every image apart."""
    rng = np.random.default_rng(100 * person + number)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def rows() -> list[tuple[str, bytes]]:
    return [(name, face(p, n)) for p, (name, count) in enumerate(PEOPLE.items()) for n in range(count)]


def write_hub_layout(root: Path) -> Path:
    """Two configs as a Hub repo holds them: ``private`` (two Parquet shards) and ``public`` (other people)."""
    features = datasets.Features({"photo": datasets.Image(), "person": datasets.Value("string")})
    table = rows()
    shards = (table[:5], table[5:])
    for index, shard in enumerate(shards):
        data = {"photo": [{"bytes": b, "path": None} for _, b in shard], "person": [p for p, _ in shard]}
        path = root / "data" / f"private-{index:05d}-of-00002.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))
    public = {"photo": [{"bytes": face(9, n), "path": None} for n in range(2)], "person": ["zed", "zed"]}
    datasets.Dataset.from_dict(public, features=features).to_parquet(str(root / "data" / "public-00000.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: private\n  data_files:\n  - split: train\n    path: data/private-*.parquet\n"
        "- config_name: public\n  data_files:\n  - split: train\n    path: data/public-*.parquet\n---\n# Faces\n"
    )
    return root


def write_imagefolder(root: Path) -> Path:
    for p, (name, count) in enumerate(PEOPLE.items()):
        for n in range(count):
            path = root / "train" / name / f"{n:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(face(p, n))
    return root


@pytest.fixture
def hub_layout(tmp_path):
    return write_hub_layout(tmp_path / "faces")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """The same files as a cached snapshot of dataset repo ``someone/faces`` at commit ``COMMIT``, Hub offline."""
    cache = tmp_path / "hub"
    put_in_hf_cache(write_hub_layout(tmp_path / "repo"), "someone/faces", cache, "dataset", COMMIT)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return cache


def test_hub_layout_split_matches_the_registered_builders(hub_layout, tmp_path):
    """`shots` training images per identity drawn with the seed as CASIA-WebFace draws them, the rest held out."""
    data = load_identity_dataset(str(hub_layout), "private", shots=2, seed=3, cache_dir=str(tmp_path / "c"))
    train, test = data["train"], data["test"]
    assert train.features["label"].names == sorted(PEOPLE) and train.features["image"] == datasets.Image()
    assert sorted(train["identity"][:]) == sorted(name for name in PEOPLE for _ in range(2))
    assert len(test) == sum(PEOPLE.values()) - 2 * len(PEOPLE)
    assert not set(train["source"][:]) & set(test["source"][:])
    width = len(str(sum(PEOPLE.values())))
    by_person = {}
    for row, (name, _) in enumerate(rows()):
        by_person.setdefault(name, []).append(f"{row:0{width}d}")
    expected = select_subset(by_person, None, 2, seed=3)
    assert sorted(train["source"][:]) == sorted(f"train[{int(r)}]" for rs in expected.values() for r in rs)
    image = train.cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    assert image in {b for _, b in rows()}  # stored as released, not re-encoded
    other = load_identity_dataset(str(hub_layout), "private", shots=2, seed=4, cache_dir=str(tmp_path / "c"))
    assert sorted(other["train"]["source"][:]) != sorted(train["source"][:])


def test_imagefolder_tree_and_identity_subset(tmp_path):
    root = write_imagefolder(tmp_path / "tree")
    whole = load_identity_dataset(str(root), cache_dir=str(tmp_path / "c"))
    assert "test" not in whole and len(whole["train"]) == sum(PEOPLE.values())  # shots unset: every image trains
    subset = load_identity_dataset(str(root), shots=3, num_identities=2, seed=0, cache_dir=str(tmp_path / "c"))
    assert len(subset["train"].features["label"].names) == 2 and len(subset["train"]) == 6
    assert identity_names(str(root), cache_dir=str(tmp_path / "c")) == sorted(PEOPLE)


def test_columns_are_detected_or_named(tmp_path):
    root = tmp_path / "two_images"
    root.mkdir()
    data = {
        "a": [{"bytes": b, "path": None} for _, b in rows()],
        "b": [{"bytes": b, "path": None} for _, b in rows()],
        "who": [name for name, _ in rows()],
        "note": ["x"] * len(rows()),
    }
    features = {"a": datasets.Image(), "b": datasets.Image(), "who": datasets.Value("string")}
    datasets.Dataset.from_dict(
        data, features=datasets.Features({**features, "note": datasets.Value("string")})
    ).to_parquet(str(root / "train.parquet"))
    cache = str(tmp_path / "c")
    with pytest.raises(ValueError, match=r"an Image feature to read; found several: \['a', 'b'\].*--image_column"):
        load_identity_dataset(str(root), cache_dir=cache)
    with pytest.raises(ValueError, match=r"identity column to read; found several: \['who', 'note'\].*--label_col"):
        load_identity_dataset(str(root), image_column="b", cache_dir=cache)
    data = load_identity_dataset(str(root), image_column="b", label_column="who", cache_dir=cache)
    assert data["train"].features["label"].names == sorted(PEOPLE)
    with pytest.raises(ValueError, match="--image_column 'who'"):
        load_identity_dataset(str(root), image_column="who", label_column="who", cache_dir=cache)


def test_too_few_photos_and_registered_options_are_refused(hub_layout, tmp_path):
    with pytest.raises(ValueError, match=r"fewer than the 4 images .*: bo \(3\)"):
        load_identity_dataset(str(hub_layout), "private", shots=4, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"takes no images_per_identity; a Hub dataset or folder takes \('revision'"):
        load_identity_dataset(str(hub_layout), "private", images_per_identity=2)
    with pytest.raises(ValueError, match=r"shots=0 is not allowed; shots \(real training images per identity\)"):
        load_identity_dataset(str(hub_layout), "private", shots=0)
    with pytest.raises(ValueError, match="registered benchmark: it takes no revision"):
        load_identity_dataset("orl_faces", "private", revision="main")
    with pytest.raises(SettingsError, match="--dataset_revision 'v1'.*local folder"):
        DataSplitSettings(dataset_name=str(hub_layout), dataset_revision="v1").check()
    with pytest.raises(SettingsError, match="--data_dir.*its own folder or Hub repo"):
        DataSplitSettings(dataset_name=str(hub_layout), data_dir="/elsewhere").check()
    with pytest.raises(SettingsError, match="--dataset_name 'no/such/place'"):
        DataSplitSettings(dataset_name="no/such/place").check()
    with pytest.raises(SettingsError, match="--image_column 'x'.*registered benchmark"):
        DataSplitSettings(dataset_name="orl_faces", image_column="x").check()


def test_hub_id_from_the_cache_pins_the_commit(hub_cache, tmp_path):
    settings = DataSplitSettings(dataset_name="someone/faces", dataset_config="private", shots=2)
    settings.check()
    split = resolve_data_split(settings)
    assert split.dataset_revision == COMMIT and split.split_seed == 0
    data = split.load(cache_dir=str(tmp_path / "c"))
    record = split.record(data)
    assert record["dataset_name"] == "someone/faces" and record["dataset_revision"] == COMMIT
    assert len(record["train_images"]) == 6 and record["identities"] == sorted(PEOPLE)
    assert DataSplit.from_record(record) == split  # what inspection reloads: the recorded commit
    inherited = resolve_data_split(DataSplitSettings(), record, "the adapter")  # a later stage: same commit
    assert (inherited.dataset_name, inherited.dataset_revision, inherited.shots) == ("someone/faces", COMMIT, 2)
    other = put_in_hf_cache(tmp_path / "repo", "someone/faces", hub_cache, "dataset", "d" * 40)
    (other / "refs" / "main").write_text("d" * 40)  # the branch moved on: the recorded commit still decides
    assert resolve_data_split(DataSplitSettings(), record, "the adapter").dataset_revision == COMMIT
    with pytest.raises(ProvenanceError, match=f"--dataset_revision 'main' is commit {'d' * 40}.*commit {COMMIT}"):
        resolve_data_split(DataSplitSettings(dataset_revision="main"), record, "the adapter")
    with pytest.raises(FileNotFoundError, match="'someone/other' is not in the local Hugging Face cache"):
        load_identity_dataset("someone/other")


def test_public_config_sharing_an_identity_is_refused(tmp_path):
    from rlsyn_trl.data import check_disjoint_identities

    root = write_hub_layout(tmp_path / "faces")
    private = load_identity_dataset(str(root), "private", cache_dir=str(tmp_path / "c"))["train"]
    public = load_identity_dataset(str(root), "public", cache_dir=str(tmp_path / "c"))["train"]
    check_disjoint_identities(public, private, "public", "private")
    with pytest.raises(ValueError, match=r"1 of the 3 identities of private \(bo\) are also in public"):
        check_disjoint_identities(public.cast_column("label", datasets.ClassLabel(names=["bo", "zed"])), private,
                                  "public", "private")  # fmt: skip


@pytest.mark.parametrize("layout", ["hub_layout", "imagefolder"])
def test_cold_start_then_generation_records_the_user_data(layout, tiny_base_dir, tmp_path, monkeypatch):
    from rlsyn_trl.generation import GenerationConfig
    from rlsyn_trl.provenance import read_provenance
    from rlsyn_trl.recipes.generate import main as generate
    from rlsyn_trl.recipes.sft import main as cold_start
    from rlsyn_trl.trainers import ColdStartConfig

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    if layout == "hub_layout":
        root, config_name = write_hub_layout(tmp_path / "faces"), "private"
    else:
        root, config_name = write_imagefolder(tmp_path / "tree"), None
    sft = tmp_path / "sft"
    cold_start(
        ColdStartConfig(
            base_model=str(tiny_base_dir), output_dir=str(sft), dataset_name=str(root), dataset_config=config_name,
            shots=2, split_seed=1, max_steps=2, batch_size=6, warmup_steps=1, num_inference_steps=2,
            grid_per_identity=1, checkpoint_every=2,
        )
    )  # fmt: skip
    adapter = read_provenance(sft)["data"]
    assert adapter["dataset_name"] == str(root) and adapter["dataset_config"] == config_name
    assert adapter["dataset_revision"].startswith("fingerprint:") and adapter["split_seed"] == 1
    assert adapter["identities"] == sorted(PEOPLE) and adapter["num_train_images"] == 6
    split = DataSplit(str(root), config_name, None, 2, 1)
    assert DataSplit.from_record(adapter) == split  # a folder's fingerprint is recorded, not loaded as a revision
    assert adapter["train_images"] == split.record(split.load(cache_dir=str(tmp_path / "again")))["train_images"]

    encoder = build_tiny_encoder(tmp_path / "encoder")
    dataset, summary = generate(
        GenerationConfig(
            adapter=str(sft), encoder=str(encoder), public_dataset_config=None, samples_per_identity=2,
            num_inference_steps=2, batch_size=6, shard_size=6, device="cpu", output_dir=str(tmp_path / "synthetic"),
        )
    )  # fmt: skip
    record = read_provenance(tmp_path / "synthetic" / "dataset")["data"]
    assert record["dataset_name"] == str(root) and record["fingerprint"] == adapter["fingerprint"]
    assert record["dataset_revision"] == adapter["dataset_revision"]
    assert sorted(set(dataset["identity"])) == sorted(PEOPLE) and len(dataset) == 6
    assert summary["reference"]["num_images"] == sum(PEOPLE.values()) - 6  # the held-out photos: the audit's floor
