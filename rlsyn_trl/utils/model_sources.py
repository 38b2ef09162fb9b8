"""Where a model comes from: an embedded id, a local folder or a Hub id, resolved to a local folder.

This module only turns names into folders and says what kind of folder it is (a base DiT generator with
``model_index.json`` or an identity adapter with ``identity_adapter_config.json``); it imports nothing of the
package, so the generator, adapter, encoder and recognizer modules can all depend on it without depending on each
other.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

MODEL_INDEX = "model_index.json"
# Not peft's ``adapter_config.json`` / ``adapter_model.safetensors``: the Hub and ``peft`` would take the folder for a
# peft adapter of a transformers model, which it is not (identity embedders + LoRA on a diffusers DiT). Folders
# written with those names are still read.
ADAPTER_CONFIG = "identity_adapter_config.json"
LEGACY_ADAPTER_CONFIG = "adapter_config.json"
GENERATOR_KIND = "generator"
ADAPTER_KIND = "adapter"

ASSETS = Path(__file__).resolve().parents[1] / "assets"
EMBEDDED_MODELS = {
    "embedded:orl_faces": ASSETS / "orl_faces_prior" / "generator",
    "embedded:orl_faces/encoder": ASSETS / "orl_faces_prior" / "encoder",
    # An identity evaluator the reward never saw: another architecture, seed 1, public identities only.
    "embedded:orl_faces/evaluator": ASSETS / "orl_faces_prior" / "evaluator",
}


def resolve_pretrained_folder(path_or_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; ``embedded:...`` from the package; a Hub id through the HF cache (offline once cached)."""
    if str(path_or_id) in EMBEDDED_MODELS:
        folder = EMBEDDED_MODELS[str(path_or_id)]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"The embedded model {path_or_id} is missing from this installation ({folder}). Rebuild it with "
                "`accelerate launch recipes/pretrain_prior.py --config recipes/orl_faces/prior_full.yaml` and copy "
                "its generator/ and encoder/ folders there, or pass another base model."
            )
        return folder
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(path_or_id).count("/") > 1:
        raise FileNotFoundError(f"{path_or_id} is neither a local folder nor a Hub repo id (owner/name).")
    try:
        return Path(snapshot_download(str(path_or_id), revision=revision))
    except LocalEntryNotFoundError as error:
        raise OSError(
            f"Cannot resolve {path_or_id!r}: it is not a local folder and is not in the Hugging Face cache, and the "
            "Hub is not reachable (HF_HUB_OFFLINE=1 or no network). Download it once with "
            f"`huggingface-cli download {path_or_id}` on a connected machine, or pass a local folder."
        ) from error


def adapter_config_path(folder: str | os.PathLike) -> Path | None:
    """An adapter folder's config file (the current name, else the legacy one), None when there is none."""
    for name in (ADAPTER_CONFIG, LEGACY_ADAPTER_CONFIG):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def generator_folder_kind(folder: str | os.PathLike) -> str:
    """``"adapter"`` for an identity-adapter folder, ``"generator"`` for a base DiT folder (``transformer/``).

    A folder with ``model_index.json`` is a base generator even if it also holds an adapter config.
    """
    folder = Path(folder)
    if not (folder / MODEL_INDEX).is_file() and adapter_config_path(folder) is not None:
        return ADAPTER_KIND
    if (folder / "transformer").is_dir():
        return GENERATOR_KIND
    held = sorted(path.name for path in folder.iterdir())[:8] if folder.is_dir() else []
    found = f"it holds {', '.join(held)}" if held else "it is empty"
    raise FileNotFoundError(
        f"{folder} is not a generator: expected an identity adapter (written by `rlsyn-trl sft` or `ddpo`, with "
        f"{ADAPTER_CONFIG}) or a base DiT folder (model_index.json and transformer/), but {found}. Point "
        "--adapter / --base_model at the stage's output folder (its --output_dir)."
    )


def looks_like_repo_id(name: str) -> bool:
    """``owner/name`` as the Hub spells it; ``./x``, ``/data/x``, ``a/b/c`` or ``x`` are paths or registered names."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or name.startswith((".", "~")) or "\\" in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
