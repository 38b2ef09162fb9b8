"""Shared test set-up: offline Hub, fast CPU math, a per-session datasets cache, accelerate's state per module."""

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_flush_denormal(True)


@contextlib.contextmanager
def isolated_accelerate_state():
    """Inside: accelerate's per-process state (precision, gradient accumulation) and what ``auto`` precision resolved
    to (``setup_runtime``'s answer, which tests also take under a patched probe) as a new process has them, none.

    After: the state as it was, in place (accelerators built before share that dict and keep working).
    """
    from accelerate.state import AcceleratorState, GradientState

    from rlsyn_trl.utils import runtime

    states = (AcceleratorState._shared_state, GradientState._shared_state)
    saved = [dict(state) for state in states]
    saved_auto, runtime._auto_precision = runtime._auto_precision, None
    for state in states:
        state.clear()
    try:
        yield
    finally:
        for state, before in zip(states, saved):
            state.clear()
            state.update(before)
        runtime._auto_precision = saved_auto


@pytest.fixture(scope="module", autouse=True)
def module_accelerate_state():
    """Each test module starts as a new process would, so no module depends on which ran before it."""
    with isolated_accelerate_state():
        yield


@pytest.fixture
def fresh_accelerate_state():
    """For a test that builds a stage in another precision than its module's shared fixtures."""
    with isolated_accelerate_state():
        yield


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


TINY_LABELS = [f"s{i}" for i in range(1, 21)]


def build_tiny_generator(num_classes: int = 20, resolution: int = 32, seed: int = 0):
    """A 2-block pixel DiT with random (not zero) modulation so its samples depend on the labels."""
    from rlsyn_trl.generators import IdentityGenerator, build_pixel_dit, default_scheduler

    torch.manual_seed(seed)
    transformer = build_pixel_dit(num_classes, resolution=resolution, width=32, depth=2, heads=2, patch_size=4)
    for parameter in transformer.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    return IdentityGenerator(transformer, default_scheduler(), [f"s{i}" for i in range(1, num_classes + 1)])


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory):
    """A tiny generator saved in the diffusers folder layout (model_index.json, transformer/, scheduler/)."""
    folder = tmp_path_factory.mktemp("tiny_base")
    build_tiny_generator().save_pretrained(folder)
    return folder


def put_in_hf_cache(folder, repo_id: str, cache_dir, repo_type: str = "model", revision: str = "0" * 40):
    """Lay ``folder`` out as a cached Hub snapshot so ``from_pretrained(repo_id)`` works with HF_HUB_OFFLINE=1."""
    import shutil
    from pathlib import Path

    prefix = {"model": "models", "dataset": "datasets"}[repo_type]
    root = Path(cache_dir) / f"{prefix}--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / revision, dirs_exist_ok=True)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    return root


def read_events(folder) -> tuple[set[str], dict]:
    """Scalar (and ``image:``-prefixed image) tags of the tensorboard event files under ``folder``, and the hparams
    accelerate stored there."""
    import yaml
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(folder))
    multiplexer.Reload()
    scalars = set()
    for tags in multiplexer.Runs().values():
        scalars.update(tags["scalars"])
        scalars.update(f"image:{tag}" for tag in tags["images"])
    (hparams,) = folder.rglob("hparams.yml")
    return scalars, yaml.safe_load(hparams.read_text())


@pytest.fixture(scope="session")
def inspected_run(tmp_path_factory, datasets_cache, orl_private):
    """A tiny generated run holding one exact copy of a real training photo (``synthetic_fixtures``), shared by the
    inspection tests: ``(run folder, real train row of the copy)``."""
    from synthetic_fixtures import build_run_with_copy

    torch.set_num_threads(1)
    return build_run_with_copy(tmp_path_factory.mktemp("inspect"), datasets_cache, orl_private["train"])


FACES_INSTALL = r"pip install 'rlsyn-trl\[faces\]'"  # what a refusal without the faces extra names (a pattern)


def has_faces_extra() -> bool:
    from rlsyn_trl.data import synthetic_faces

    try:
        synthetic_faces.require_faces_extra()
    except ImportError:
        return False
    return True


needs_faces_extra = pytest.mark.skipif(not has_faces_extra(), reason=f"the faces extra: {FACES_INSTALL}")
