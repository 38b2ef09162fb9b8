"""Model and dataset cards rendered from the Jinja templates in ``model_cards/``."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

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
