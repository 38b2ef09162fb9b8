"""Model and dataset cards rendered from the Jinja templates in ``model_cards/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData
from peft import LoraConfig

TEMPLATES = Path(__file__).resolve().parent / "templates"


def template_path(name: str) -> Path:
    path = TEMPLATES / name
    if not path.is_file():
        raise FileNotFoundError(f"Card template {name} is missing from {TEMPLATES}.")
    return path


def render_model_card(template: str, card_data: ModelCardData, **values) -> str:
    """Render a model card (YAML metadata + Markdown body) from a template in ``model_cards/``."""
    return str(ModelCard.from_template(card_data, template_path=str(template_path(template)), **values))


def render_dataset_card(template: str, card_data: DatasetCardData, **values) -> str:
    """Render a dataset card from a template in ``model_cards/``."""
    return str(DatasetCard.from_template(card_data, template_path=str(template_path(template)), **values))


def adapter_card(
    config: Any,
    generator: Any,
    lora: LoraConfig | None,
    base_model: str,
    stage: str,
    tags: list[str],
    steps: int | str,
    batch_size: int,
    learning_rate: float,
    extra: str = "",
) -> str:
    """An identity adapter's card (``identity_adapter.md``) for any stage: ``config`` is the stage's config (its
    data, shots and output fields) and ``generator`` the adapted :class:`~rlsyn_trl.generators.IdentityGenerator`."""
    card_data = ModelCardData(
        library_name="rlsyn-trl",
        tags=["rlsyn-trl", "diffusers", "dit", "identity-adapter", "synthetic-data", *tags],
        base_model=None if base_model.startswith("embedded:") else base_model,
    )
    lora_text = (
        f"LoRA rank {lora.r} (alpha {lora.lora_alpha}) was trained on `{', '.join(sorted(lora.target_modules))}`."
        if lora
        else "the backbone was kept frozen (no LoRA)."
    )
    return render_model_card(
        "identity_adapter.md",
        card_data,
        model_name=Path(config.hub_model_id or config.output_dir).name,
        base_model=base_model,
        stage=stage,
        num_identities=generator.num_classes,
        lora_text=lora_text,
        repo_or_path=config.hub_model_id or config.output_dir,
        first_label=generator.label_names[0],
        dataset=f"{config.dataset_name}/{config.dataset_config}",
        shots_text=f"{config.shots} images per identity, split seed {config.split_seed}",
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        resolution=generator.resolution,
        extra=extra,
    )
