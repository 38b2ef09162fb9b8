"""Model and dataset cards rendered from the Jinja templates in ``model_cards/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
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


RESULT_METRIC_SKIPPED = ("loss", "runtime", "samples_per_second", "steps_per_second", "epoch")


def recognizer_eval_results(metrics: dict[str, float], dataset: str, dataset_config: str | None) -> list[EvalResult]:
    """The recognizer's ``test_*`` metrics as model-index entries (identification, ReID or verification)."""
    results = []
    for key, value in metrics.items():
        name = key.removeprefix("test_")
        if not key.startswith("test_") or name.endswith(RESULT_METRIC_SKIPPED) or not isinstance(value, (int, float)):
            continue
        results.append(
            EvalResult(
                task_type="image-classification",
                dataset_type=dataset,
                dataset_name=f"{dataset}/{dataset_config}" if dataset_config else dataset,
                dataset_config=dataset_config,
                dataset_split="test",
                metric_type=name,
                metric_name=name,
                metric_value=float(value),
            )
        )
    return results


def recognizer_card(
    config: Any, data: dict, metrics: dict[str, float], synthetic: str | None, backbone: str, pretrained: bool
) -> str:
    """A trained recognizer's card (``recognizer.md``): the training data's provenance (``data`` is the provenance
    record's ``data`` section) and the test metrics, also as the card's model-index. ``pretrained``: the backbone
    started from ``config.model``'s weights."""
    dataset, dataset_config = data["dataset_name"], data.get("dataset_config")
    name = Path(config.hub_model_id or config.output_dir).name
    card_data = ModelCardData(
        library_name="rlsyn-trl",
        tags=["rlsyn-trl", "identity-recognition", dataset],
        base_model=config.model if pretrained and not config.model.startswith("embedded:") else None,
        model_name=name,
        eval_results=recognizer_eval_results(metrics, dataset, dataset_config) or None,
    )
    timings = RESULT_METRIC_SKIPPED[1:]  # the table keeps the loss, the model-index does not
    rows = [
        f"| {key.removeprefix('test_')} | {value:.4f} |"
        for key, value in metrics.items()
        if key.startswith("test_") and not key.endswith(timings) and isinstance(value, (int, float))
    ]
    return render_model_card(
        "recognizer.md",
        card_data,
        model_name=name,
        backbone=backbone,
        start_text=f", started from `{config.model}`" if pretrained else ", trained from random weights",
        loss=config.loss,
        num_identities=len(data["identities"]),
        dataset=f"{dataset}/{dataset_config}",
        image_size="x".join(str(side) for side in config.resolution),
        channels=config.channels,
        repo_or_path=config.hub_model_id or config.output_dir,
        shots_text=f"{data.get('shots')} images per identity, split seed {data.get('split_seed')}",
        num_train_images=data["num_train_images"],
        fingerprint=data["fingerprint"],
        synthetic_text=f"`{synthetic}` (its provenance is the parent in `provenance.json`)" if synthetic else "none",
        steps=config.max_steps,
        batch_size=config.per_device_train_batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        results_table="\n".join(["| metric | value |", "| --- | --- |", *rows]) if rows else "No test split.",
    )
