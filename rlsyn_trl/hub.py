"""Publishing to the Hugging Face Hub, in one place: adapters, synthetic datasets (with cards) and recognizers.

Everything here is privacy-first: repositories are created PRIVATE unless the caller says otherwise, and a
synthetic dataset whose memorisation rate is above ``max_memorization_rate`` is refused unless forced.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

DEFAULT_MAX_MEMORIZATION_RATE = 0.05
IGNORED_WHEN_PUSHING = ["checkpoints/*", "*.tmp", "*.tmp.*"]


class MemorizationError(RuntimeError):
    """A synthetic dataset holds too many near-copies of real training images to be published."""


class SyntheticDatasetNotFoundError(FileNotFoundError):
    """``load_synthetic_dataset`` got neither an existing local folder nor a Hub dataset repo it can read."""


def check_push_possible(repo_id: str | None, setting: str = "hub_model_id", api: HfApi | None = None) -> None:
    """Refuse, before any training or sampling, a push that could only fail at the end of the run.

    A valid ``owner/name`` id is required; without an injected ``api`` the Hub must be reachable in principle (not
    ``HF_HUB_OFFLINE``) and a token must be there (``hf auth login`` or ``HF_TOKEN``): both failed only after
    the work was done.
    """
    from huggingface_hub import constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id or "")
    except HFValidationError as error:
        raise ValueError(f"--{setting} {repo_id!r} is not a Hub repo id: use owner/name ({error}).") from None
    if api is not None:
        return
    if constants.HF_HUB_OFFLINE:
        raise ValueError(
            "--push_to_hub true, but HF_HUB_OFFLINE is set: the upload at the end would fail. Unset HF_HUB_OFFLINE, "
            "or run without --push_to_hub and upload the output folder later (`hf upload`)."
        )
    if get_token() is None:
        raise ValueError(
            f"--push_to_hub true, but no Hugging Face token is set, so the upload to {repo_id} at the end would "
            "fail: run `hf auth login` or set HF_TOKEN first."
        )


def _push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: str,
    private: bool,
    api: HfApi | None,
    commit_message: str,
) -> str:
    if not repo_id:
        raise ValueError("A Hub repo id (`owner/name`) is required to push; set hub_model_id / repo_id.")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Nothing to push: {folder} is not a folder.")
    api = api or HfApi()
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=commit_message,
        ignore_patterns=IGNORED_WHEN_PUSHING,
    )
    logger.info("Pushed %s to %s (%s, private=%s)", folder, repo_id, repo_type, private)
    return str(url)


def push_adapter(folder: str | os.PathLike, repo_id: str, private: bool = True, api: HfApi | None = None) -> str:
    """Upload an identity adapter folder (loadable with ``IdentityGenerator.from_pretrained(repo_id)``)."""
    from .utils.model_sources import ADAPTER_CONFIG, adapter_config_path

    if adapter_config_path(folder) is None:
        raise FileNotFoundError(f"{folder} is not an identity adapter folder (no {ADAPTER_CONFIG}).")
    return _push_folder(folder, repo_id, "model", private, api, "Upload rlsyn-trl identity adapter")


def push_model_folder(folder: str | os.PathLike, repo_id: str, private: bool = True, api: HfApi | None = None) -> str:
    """Upload a ``save_pretrained`` folder (e.g. the trained recognizer)."""
    return _push_folder(folder, repo_id, "model", private, api, "Upload rlsyn-trl model")


def check_memorization(rate: float, max_rate: float = DEFAULT_MAX_MEMORIZATION_RATE, force: bool = False) -> None:
    """Refuse (unless forced) to publish a dataset with more near-copies of real images than ``max_rate``."""
    if rate > max_rate and not force:
        raise MemorizationError(
            f"The synthetic dataset's memorisation rate is {rate:.1%}, above the allowed {max_rate:.1%}: too many "
            "samples are near-copies of real (private) training images. Regenerate with another adapter or filter "
            "the `memorized` rows out, raise max_memorization_rate, or pass force=True if you accept the risk."
        )
    if rate > max_rate:
        logger.warning("Pushing a dataset with memorisation rate %.1f%% (forced).", 100 * rate)


def push_synthetic_dataset(
    folder: str | os.PathLike,
    repo_id: str,
    memorization_rate: float,
    private: bool = True,
    max_memorization_rate: float = DEFAULT_MAX_MEMORIZATION_RATE,
    force: bool = False,
    api: HfApi | None = None,
) -> str:
    """Upload a synthetic dataset folder (data files + README card) after the memorisation check."""
    check_memorization(memorization_rate, max_memorization_rate, force)
    if not (Path(folder) / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no README.md dataset card: render the card before pushing.")
    return _push_folder(folder, repo_id, "dataset", private, api, "Upload rlsyn-trl synthetic identity dataset")


def load_synthetic_dataset(
    repo_id_or_path: str | os.PathLike,
    split: str = "train",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """A synthetic dataset from a local folder or a Hub repo id, online or from the local HF cache offline.

    ``datasets.load_dataset(repo_id)`` works online; offline it only finds datasets it prepared itself before. This
    resolves the repo's snapshot through ``huggingface_hub`` (the cache when ``HF_HUB_OFFLINE=1``) and reads its
    parquet files with the card's configuration, so the ``ClassLabel`` names survive either way. ``cache_dir`` is
    the ``datasets`` cache for the prepared arrow files.
    """
    import datasets

    folder = Path(repo_id_or_path).expanduser()
    if not folder.is_dir():
        folder = _dataset_snapshot(str(repo_id_or_path), revision)
    elif not any(folder.rglob("*.parquet")) and not any(folder.rglob("*.arrow")):
        what = "an identity adapter" if any(folder.glob("*adapter_config.json")) else "no data files"
        raise SyntheticDatasetNotFoundError(
            f"{folder} holds {what}, not a synthetic dataset: expected the folder `rlsyn-trl generate` wrote (its "
            "dataset/ or hub/ folder, with parquet or arrow files) or a Hub dataset id owner/name."
        )
    return datasets.load_dataset(str(folder), split=split, cache_dir=str(cache_dir) if cache_dir else None)


def _dataset_snapshot(name: str, revision: str | None) -> Path:
    """The cached (offline) or downloaded snapshot of dataset repo ``name``; a clear error naming it otherwise."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    from .utils.model_sources import looks_like_repo_id

    local = Path(name).expanduser().absolute()
    if not looks_like_repo_id(name):
        raise SyntheticDatasetNotFoundError(
            f"No such local folder: {local} (from {name!r}). It is not a Hub repo id (`owner/name`) either, so it "
            "was read as a local path. Check the path: it should be the folder holding the dataset card README.md "
            "and data/*.parquet (a generation run writes it to <output_dir>/hub), or pass a Hub dataset repo id."
        )
    at = f" at revision {revision!r}" if revision else ""
    fetch = f"hf download {name} --repo-type dataset" + (f" --revision {revision}" if revision else "")
    not_local = f"(No local folder {local} exists either; if you meant a local path, check it.)"
    try:
        return Path(snapshot_download(name, repo_type="dataset", revision=revision))
    except LocalEntryNotFoundError as error:
        if constants.HF_HUB_OFFLINE:
            raise SyntheticDatasetNotFoundError(
                f"Dataset repo {name!r}{at} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                f"HF_HUB_OFFLINE=1 forbids downloading it. Run once online, or fetch it with `{fetch}` "
                f"(`huggingface-cli download` in huggingface_hub < 1.0), or unset HF_HUB_OFFLINE. {not_local}"
            ) from error
        raise SyntheticDatasetNotFoundError(
            f"Dataset repo {name!r}{at} could not be fetched from the Hugging Face Hub (no connection?) and is not in "
            f"the local cache ({constants.HF_HUB_CACHE}). Check the network, or fetch it with `{fetch}` where the Hub "
            f"can be reached and copy the cache over. {not_local}"
        ) from error
    except RevisionNotFoundError as error:
        raise SyntheticDatasetNotFoundError(
            f"Dataset repo {name!r} has no revision {revision!r} on the Hugging Face Hub. Check the revision (a "
            f"branch, tag or commit of the repo), or leave it unset for the latest. {not_local}"
        ) from error
    except RepositoryNotFoundError as error:  # includes gated repos the caller has no access to
        raise SyntheticDatasetNotFoundError(
            f"Dataset repo {name!r} was not found on the Hugging Face Hub, or you have no access to it (private or "
            "gated). Check the repo id (datasets are looked up with repo_type='dataset'); for a private repo log in "
            f"with `hf auth login` or set HF_TOKEN. {not_local}"
        ) from error
