"""Identity adapters: fresh zero-initialised class embedders (+ optional LoRA) on top of a base DiT.

An adapter folder holds ``identity_adapter_config.json`` (base model id and revision, label names, resolution, LoRA
config), ``identity_embedders.safetensors`` (one table per DiT block), ``identity_lora.safetensors`` (LoRA weights,
peft's state-dict format) and a model card. The names are not peft's, so neither the Hub nor ``peft`` takes the
folder for a peft adapter; folders written with peft's names (``adapter_config.json``, ``adapter_model.safetensors``)
still load. ``IdentityGenerator.from_pretrained(folder_or_hub_id)`` rebuilds the
generator, resolving the base model itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers.models.embeddings import LabelEmbedding
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import save_file

from ..utils.io import atomic_write, atomic_write_json, atomic_write_text, read_json, read_safetensors
from ..utils.model_sources import (
    ADAPTER_CONFIG,
    ADAPTER_KIND,
    GENERATOR_KIND,
    LEGACY_ADAPTER_CONFIG,
    adapter_config_path,
    generator_folder_kind,
    resolve_pretrained_folder,
)
from .dit import IdentityGenerator, class_embedders, load_base_generator
from .loading import register_folder_loader

EMBEDDERS_FILE = "identity_embedders.safetensors"
LORA_FILE = "identity_lora.safetensors"
LEGACY_FILES = (LEGACY_ADAPTER_CONFIG, "adapter_model.safetensors")  # read, never written
ADAPTER_FORMAT = "rlsyn-identity-adapter/1"
LORA_ADAPTER_NAME = "default"


def replace_class_embedders(generator: IdentityGenerator, label_names: Sequence[str]) -> None:
    """Swap EVERY block's label embedder for a new zero-initialised one sized to ``label_names`` + 1 null row.

    Block 0's embedder also conditions the output layer, so the whole conditioning path becomes identity-specific.
    """
    label_names = list(label_names)
    if not label_names:
        raise ValueError("An identity adapter needs at least one identity label.")
    for block in generator.transformer.transformer_blocks:
        old = block.norm1.emb.class_embedder
        hidden = old.embedding_table.embedding_dim
        new = LabelEmbedding(len(label_names), hidden, dropout_prob=0.1)  # > 0 keeps the null row
        new.dropout_prob = 0.0  # labels are dropped once per batch by the trainer
        torch.nn.init.zeros_(new.embedding_table.weight)
        new.to(old.embedding_table.weight.device, old.embedding_table.weight.dtype)
        block.norm1.emb.class_embedder = new
    generator.label_names = label_names
    generator.transformer.register_to_config(num_embeds_ada_norm=len(label_names))


def add_lora(generator: IdentityGenerator, lora_config: LoraConfig) -> None:
    """Inject LoRA layers into the transformer; peft freezes everything else, so re-enable the embedders."""
    inject_adapter_in_model(lora_config, generator.transformer, adapter_name=LORA_ADAPTER_NAME)
    set_trainable_embedders(generator)


def set_trainable_embedders(generator: IdentityGenerator) -> None:
    for embedder in class_embedders(generator.transformer):
        embedder.requires_grad_(True)


def freeze_backbone(generator: IdentityGenerator) -> None:
    """Freeze every base weight, the VAE's included; only identity embedders (and LoRA weights) keep training.

    The denoising loss encodes real images through the VAE: a trainable VAE would collect gradients there that no
    optimizer ever clears.
    """
    for name, parameter in generator.transformer.named_parameters():
        parameter.requires_grad_("lora_" in name)
    if generator.vae is not None:
        generator.vae.requires_grad_(False).eval()
    set_trainable_embedders(generator)


def embedder_state(generator: IdentityGenerator) -> dict[str, torch.Tensor]:
    return {
        f"block_{index}": embedder.embedding_table.weight.detach().cpu().contiguous()
        for index, embedder in enumerate(class_embedders(generator.transformer))
    }


def has_lora(generator: IdentityGenerator) -> bool:
    return any("lora_" in name for name, _ in generator.transformer.named_parameters())


def save_adapter(
    generator: IdentityGenerator,
    save_directory: str | os.PathLike,
    base_model: str,
    base_revision: str | None = None,
    lora_config: LoraConfig | None = None,
    card: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write the adapter folder; every file goes through a temporary name so a crash never leaves half a file."""
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / EMBEDDERS_FILE, lambda p: save_file(embedder_state(generator), str(p)))
    lora = None
    if lora_config is not None and has_lora(generator):
        state = get_peft_model_state_dict(generator.transformer, adapter_name=LORA_ADAPTER_NAME)
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        atomic_write(directory / LORA_FILE, lambda p: save_file(state, str(p)))
        lora = lora_config.to_dict()
        lora["target_modules"] = sorted(lora["target_modules"]) if lora.get("target_modules") else None
        lora = json.loads(json.dumps(lora, default=str))
    elif (directory / LORA_FILE).exists():
        (directory / LORA_FILE).unlink()
    config = {
        "format": ADAPTER_FORMAT,
        "base_model": base_model,
        "base_revision": base_revision,
        "label_names": generator.label_names,
        "resolution": generator.resolution,
        "lora": lora,
        **(extra or {}),
    }
    atomic_write_json(directory / ADAPTER_CONFIG, config)
    for name in LEGACY_FILES:  # a folder retrained in place no longer looks like a peft adapter
        (directory / name).unlink(missing_ok=True)
    if card is not None:
        atomic_write_text(directory / "README.md", card)
    return directory


def read_adapter_config(folder: str | os.PathLike) -> dict:
    path = adapter_config_path(folder)
    if path is None:
        raise FileNotFoundError(f"{folder} holds no {ADAPTER_CONFIG}: not an rlsyn-trl identity adapter folder.")
    config = read_json(path, "an identity adapter's config")
    if config.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path} is not an rlsyn-trl identity adapter (format {config.get('format')!r}).")
    return config


def load_adapter(folder: str | os.PathLike, torch_dtype: torch.dtype | None = None) -> IdentityGenerator:
    """Rebuild base model + identity embedders (+ LoRA) from a resolved adapter folder."""
    folder = Path(folder)
    config = read_adapter_config(folder)
    base_folder = resolve_pretrained_folder(config["base_model"], config.get("base_revision"))
    if generator_folder_kind(base_folder) != GENERATOR_KIND:
        raise ValueError(f"{folder} names {config['base_model']} as its base model, which is not a base DiT folder.")
    generator = load_base_generator(base_folder, torch_dtype, source=str(config["base_model"]))
    generator.resolution = config.get("resolution") or generator.resolution  # e.g. 128 px faces on a 256 px DiT
    replace_class_embedders(generator, config["label_names"])
    tables = read_safetensors(folder / EMBEDDERS_FILE, "the adapter's identity embedder tables")
    embedders = class_embedders(generator.transformer)
    if len(tables) != len(embedders):
        raise ValueError(
            f"{folder} holds {len(tables)} embedder tables but the base model has {len(embedders)} blocks."
        )
    with torch.no_grad():
        for index, embedder in enumerate(embedders):
            embedder.embedding_table.weight.copy_(tables[f"block_{index}"])
    if config.get("lora"):
        lora = dict(config["lora"])
        lora_config = LoraConfig(
            r=lora["r"],
            lora_alpha=lora["lora_alpha"],
            lora_dropout=lora.get("lora_dropout", 0.0),
            target_modules=lora["target_modules"],
            init_lora_weights=False,
        )
        add_lora(generator, lora_config)
        lora_file = folder / LORA_FILE if (folder / LORA_FILE).is_file() else folder / LEGACY_FILES[1]
        lora_weights = read_safetensors(lora_file, "the adapter's LoRA weights")
        set_peft_model_state_dict(generator.transformer, lora_weights, LORA_ADAPTER_NAME)
    generator.source = str(folder)
    generator.transformer.eval()
    return generator


def _load_adapter_folder(folder: Path, torch_dtype: torch.dtype | None, source: str) -> IdentityGenerator:
    return load_adapter(folder, torch_dtype)  # source: the resolved adapter folder, as before


register_folder_loader(ADAPTER_KIND, _load_adapter_folder)
