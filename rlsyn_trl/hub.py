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
    if not (Path(folder) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{folder} is not an identity adapter folder (no adapter_config.json).")
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
    from huggingface_hub import snapshot_download

    folder = Path(repo_id_or_path).expanduser()
    if not folder.is_dir():
        folder = Path(snapshot_download(str(repo_id_or_path), repo_type="dataset", revision=revision))
    return datasets.load_dataset(str(folder), split=split, cache_dir=str(cache_dir) if cache_dir else None)
