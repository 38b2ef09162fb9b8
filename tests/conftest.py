"""Shared test set-up: offline Hub, fast CPU math, a per-session datasets cache."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory):
    """A datasets cache shared by the whole session so each ORL split is built once."""
    return str(tmp_path_factory.mktemp("datasets_cache"))


@pytest.fixture(scope="session")
def orl_private(datasets_cache):
    from rlsyn_trl.data import load_identity_dataset

    return load_identity_dataset("orl_faces", "private", shots=2, seed=0, cache_dir=datasets_cache)


@pytest.fixture(scope="session")
def orl_public(datasets_cache):
    from rlsyn_trl.data import load_identity_dataset

    return load_identity_dataset("orl_faces", "public", cache_dir=datasets_cache)
