"""Publishing: private repos, files and card uploaded, the memorisation refusal, and offline loading by repo id."""

from __future__ import annotations

import fnmatch
import types
from dataclasses import replace
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest
import torch
from conftest import put_in_hf_cache
from synthetic_fixtures import RESOLUTION, build_tiny_models, tiny_config

from rlsyn_trl.data import dataset_to_tensors
from rlsyn_trl.generation import HUB_DIR
from rlsyn_trl.generators import IdentityGenerator
from rlsyn_trl.hub import (
    MemorizationError,
    SyntheticDatasetNotFoundError,
    load_synthetic_dataset,
    push_adapter,
    push_synthetic_dataset,
)
from rlsyn_trl.recipes.generate import main as generate_synthetic_dataset

torch.set_num_threads(1)


class RecordingHfApi:
    """Stands in for ``huggingface_hub.HfApi`` at the network boundary: records each call and the files sent."""

    def __init__(self) -> None:
        self.repos: list[dict] = []
        self.uploads: list[dict] = []

    def create_repo(self, repo_id: str, *, repo_type: str | None = None, private: bool = False, exist_ok: bool = False):
        self.repos.append({"repo_id": repo_id, "repo_type": repo_type, "private": private})
        return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, repo_type=None, commit_message=None, ignore_patterns=()):
        root = Path(folder_path)
        files = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in root.rglob("*")
            if path.is_file()
            and not any(fnmatch.fnmatch(path.relative_to(root).as_posix(), p) for p in ignore_patterns)
        }
        self.uploads.append({"repo_id": repo_id, "repo_type": repo_type, "files": files})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="module")
def run(models, datasets_cache, tmp_path_factory):
    """A generated run pushed through the recording stand-in (a permissive rate limit: the models are untrained)."""
    api = RecordingHfApi()
    config = tiny_config(
        models,
        datasets_cache,
        tmp_path_factory.mktemp("pushed") / "run",
        push_to_hub=True,
        hub_dataset_id="owner/synthetic",
        max_memorization_rate=1.0,
    )
    dataset, summary = generate_synthetic_dataset(config, api=api)
    return config, dataset, summary, api


def test_generated_dataset_is_pushed_to_a_private_repo_with_its_files_and_card(run):
    config, dataset, summary, api = run
    assert api.repos == [{"repo_id": "owner/synthetic", "repo_type": "dataset", "private": True}]
    assert summary["hub_url"] == "https://huggingface.co/datasets/owner/synthetic"
    (upload,) = api.uploads
    assert upload["repo_type"] == "dataset"
    assert sorted(upload["files"]) == [
        "README.md",
        "audit.json",
        "data/train-00000-of-00001.parquet",
        "provenance.json",
    ]
    card = upload["files"]["README.md"].decode()
    assert card == (Path(config.output_dir) / HUB_DIR / "README.md").read_text()
    rate = summary["audit"]["memorization"]["rate"]
    assert f"Memorisation rate: {100 * rate:.1f}%" in card
    assert "owner/synthetic" in card and "configs:" in card  # the load snippet and the data files layout


def test_push_is_refused_above_the_memorisation_limit_unless_forced(run):
    folder = Path(run[0].output_dir) / HUB_DIR
    api = RecordingHfApi()
    with pytest.raises(MemorizationError, match=r"20\.0%, above the allowed 5\.0%"):
        push_synthetic_dataset(folder, "owner/synthetic", memorization_rate=0.2, api=api)
    assert api.repos == [] and api.uploads == []  # refused before any network call
    push_synthetic_dataset(folder, "owner/synthetic", memorization_rate=0.2, force=True, private=False, api=api)
    assert api.repos == [{"repo_id": "owner/synthetic", "repo_type": "dataset", "private": False}]


def test_a_generator_that_copies_its_training_images_is_flagged_and_not_pushed(
    models, datasets_cache, orl_private, tmp_path, monkeypatch
):
    """End to end: verbatim training images come out 100% memorised, and the push is refused unless forced."""
    train = orl_private["train"]
    images, labels = dataset_to_tensors(train, RESOLUTION)
    names = train.features["label"].names
    photo = {names[label]: image for image, label in zip(images, labels.tolist())}
    monkeypatch.setattr(
        IdentityGenerator, "sample", lambda self, identities, **_: torch.stack([photo[n] for n in identities])
    )
    api = RecordingHfApi()
    config = tiny_config(models, datasets_cache, tmp_path / "run", push_to_hub=True, hub_dataset_id="owner/copies")
    with pytest.raises(MemorizationError, match=r"100\.0%, above the allowed 5\.0%"):
        generate_synthetic_dataset(config, api=api)
    assert api.repos == [] and api.uploads == []
    assert all(datasets.load_from_disk(str(tmp_path / "run" / "dataset"))["memorized"])  # written locally all the same

    _, summary = generate_synthetic_dataset(replace(config, force_push=True), api=api)  # the same run: no resampling
    assert summary["audit"]["memorization"]["rate"] == 1.0
    assert api.repos == [{"repo_id": "owner/copies", "repo_type": "dataset", "private": True}]


def test_adapter_push_is_private_by_default(models):
    api = RecordingHfApi()
    push_adapter(models["adapter"], "owner/adapter", api=api)
    assert api.repos == [{"repo_id": "owner/adapter", "repo_type": "model", "private": True}]
    assert "identity_adapter_config.json" in api.uploads[0]["files"]


def test_offline_round_trip_through_the_local_hf_cache(run, models, datasets_cache, tmp_path, monkeypatch):
    """The user's path, by repo id, with HF_HUB_OFFLINE=1: the adapter and the dataset come from the local cache."""
    config, dataset, _, _ = run
    cache = tmp_path / "hf_cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    revision = "1" * 40
    put_in_hf_cache(Path(config.output_dir) / HUB_DIR, "owner/synthetic", cache, repo_type="dataset")
    put_in_hf_cache(models["adapter"], "owner/adapter", cache, revision=revision)

    loaded = load_synthetic_dataset("owner/synthetic", cache_dir=tmp_path / "datasets")
    assert loaded.features == dataset.features
    assert loaded["sample_id"] == dataset["sample_id"] and loaded["memorized"] == dataset["memorized"]

    from_hub = IdentityGenerator.from_pretrained("owner/adapter")
    local = IdentityGenerator.from_pretrained(models["adapter"])
    assert torch.equal(
        from_hub.sample(["s21"], seed=0, num_inference_steps=2), local.sample(["s21"], seed=0, num_inference_steps=2)
    )
    by_id, _ = generate_synthetic_dataset(
        tiny_config(models, datasets_cache, tmp_path / "by_id", adapter="owner/adapter", identities=["s21"])
    )
    assert set(by_id["generator_id"]) == {"owner/adapter"} and set(by_id["generator_revision"]) == {revision}
    assert isinstance(by_id.features["label"], datasets.ClassLabel)


@pytest.mark.parametrize("name", ["./x", "outputs/run/hub", "~/nowhere", "not-a-repo-id"])
def test_missing_local_folder_is_named_with_the_fix(name, tmp_path, monkeypatch):
    """Paths that cannot be repo ids never reach huggingface_hub (which used to answer HFValidationError)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SyntheticDatasetNotFoundError, match=r"No such local folder: .*from '") as error:
        load_synthetic_dataset(name)
    message = str(error.value)
    assert name.lstrip("~./") in message and "Check the path" in message
    assert isinstance(error.value, FileNotFoundError)
    with pytest.raises(SyntheticDatasetNotFoundError, match=r"No such local folder: .*absent"):
        load_synthetic_dataset(tmp_path / "absent")  # an absolute path, as a Path


def test_uncached_repo_offline_names_the_repo_and_the_fix(tmp_path, monkeypatch):
    """An ``owner/name`` that is neither a local folder nor cached, offline: the repo, the case and three fixes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(SyntheticDatasetNotFoundError) as error:
        load_synthetic_dataset("outputs/nope")
    message = str(error.value)
    assert "Dataset repo 'outputs/nope' is not in the local Hugging Face cache" in message
    assert str(tmp_path / "hf_cache") in message and "HF_HUB_OFFLINE=1" in message
    assert "Run once online" in message and "`hf download outputs/nope --repo-type dataset`" in message
    assert "unset HF_HUB_OFFLINE" in message
    assert f"No local folder {tmp_path / 'outputs' / 'nope'} exists either" in message


def test_repo_not_found_online_names_the_repo_and_the_fix(tmp_path, monkeypatch):
    """Online, the Hub's 404 (missing, private or gated repo) becomes the same error type, naming the repo."""
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(repo_id, **_):
        response = types.SimpleNamespace(headers={}, status_code=404, request=None)
        raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for {repo_id}", response=response)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.snapshot_download", not_found)
    with pytest.raises(SyntheticDatasetNotFoundError, match=r"'owner/gone' was not found on the Hugging Face Hub, or"):
        load_synthetic_dataset("owner/gone")


def test_a_push_that_cannot_work_is_refused_before_any_work(monkeypatch, tiny_base_dir, tmp_path):
    import huggingface_hub

    from rlsyn_trl.hub import check_push_possible
    from rlsyn_trl.recipes.sft import main as train_cold_start
    from rlsyn_trl.trainers import ColdStartConfig

    with pytest.raises(ValueError, match="--hub_model_id 'not a repo' is not a Hub repo id: use owner/name"):
        check_push_possible("not a repo")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set: the upload at the end would fail"):
        check_push_possible("me/adapter")
    check_push_possible("me/adapter", api=RecordingHfApi())  # an injected client decides for itself
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match="no Hugging Face token is set.*hf auth login"):
        check_push_possible("me/adapter")
    config = ColdStartConfig(
        base_model=str(tiny_base_dir), output_dir=str(tmp_path / "sft"), push_to_hub=True, hub_model_id="me/adapter"
    )
    with pytest.raises(ValueError, match="no Hugging Face token"):  # refused before any data, model or step
        train_cold_start(config)
    assert not (tmp_path / "sft").exists()


def test_a_wrong_synthetic_dataset_path_says_what_was_expected(tmp_path, tiny_base_dir, monkeypatch):
    from rlsyn_trl.hub import SyntheticDatasetNotFoundError, load_synthetic_dataset
    from rlsyn_trl.provenance import read_dataset_provenance

    with pytest.raises(FileNotFoundError, match="No synthetic dataset at missing/dir/x: no such folder"):
        read_dataset_provenance("missing/dir/x")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="no Hub dataset of that id in the local cache"):
        read_dataset_provenance("nobody/no_such_dataset")  # a Hub id, offline and not cached: not "no provenance"
    with pytest.raises(SyntheticDatasetNotFoundError, match="holds no data files, not a synthetic dataset"):
        load_synthetic_dataset(tiny_base_dir / "scheduler")
