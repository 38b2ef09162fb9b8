"""Model and dataset cards rendered from the Jinja templates in ``templates/``, with the metadata a Hub reader
relies on: the terms the artefact inherits, its lineage (base model, source data) and its measured results.

Terms: an adapter or a synthetic dataset is derived from a base model and from real photos, so it carries the terms
of both. DiT-XL/2's weights are CC-BY-NC-4.0; CASIA-WebFace, Market-1501 and CUHK03 are for non-commercial research
only and ORL is under AT&T Laboratories Cambridge's terms (credit required), none of which is a standard licence id:
those are ``license: other`` with a ``license_name`` and ``license_link``. When the two sources differ, the card
names both (``other``, ``<base>-and-<data>``) and links the data's terms; an unknown source gets no licence field
and the card says to check its terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from peft import LoraConfig

from .provenance import lineage, read_provenance

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The Hub has no class-conditional image generation task; identity-conditioned sampling takes no input image/text.
PIPELINE_TAG = "unconditional-image-generation"


@dataclass(frozen=True)
class Terms:
    """A licence as Hub metadata: a Hub licence id, or ``other`` with a name and a link."""

    license: str
    name: str | None = None
    link: str | None = None

    def metadata(self) -> dict[str, str]:
        values = {"license": self.license, "license_name": self.name, "license_link": self.link}
        return {key: value for key, value in values.items() if value is not None}


DATASET_TERMS = {
    "orl_faces": Terms("other", "orl-faces-att-cambridge", "https://cam-orl.co.uk/facedatabase.html"),
    "casia_webface": Terms(
        "other", "casia-webface-research-only", "http://www.cbsr.ia.ac.cn/english/CASIA-WebFace-Database.html"
    ),
    "market1501": Terms(
        "other", "market-1501-research-only", "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html"
    ),
    "cuhk03_np": Terms("other", "cuhk03-research-only", "https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html"),
    # MobileStyleGAN's weights (the random-face wheel) are distilled from StyleGAN2 trained on FFHQ: non-commercial.
    "synthetic_faces": Terms(
        "other", "stylegan2-ffhq-non-commercial", "https://github.com/NVlabs/stylegan2/blob/master/LICENSE.txt"
    ),
}
BASE_MODEL_TERMS = {
    "facebook/DiT-XL-2-256": Terms("cc-by-nc-4.0"),
    "facebook/DiT-XL-2-512": Terms("cc-by-nc-4.0"),
    "embedded:orl_faces": DATASET_TERMS["orl_faces"],  # the shipped prior was trained on ORL's public identities
}
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)


def size_category(count: int) -> str:
    """The Hub's ``size_categories`` value for ``count`` rows (``n<1K`` ... ``n>1T``)."""
    if count < 0:
        raise ValueError(f"A dataset cannot hold {count} rows.")
    for bound, name in SIZE_CATEGORIES:
        if count < bound:
            return name
    for bound, name in ((10**10, "1B<n<10B"), (10**11, "10B<n<100B"), (10**12, "100B<n<1T")):
        if count < bound:
            return name
    return "n>1T"


def base_model_terms(base_model: str | None) -> list[Terms]:
    """The terms a base model carries: a known id's, else, for a local folder (a prior trained here), those of the
    data its provenance records, the public identities and any synthetic public faces (whose terms a model trained
    on them inherits)."""
    if base_model in BASE_MODEL_TERMS:
        return [BASE_MODEL_TERMS[base_model]]
    if not base_model or not Path(base_model).expanduser().is_dir():
        return []
    names = []
    for record in lineage(read_provenance(Path(base_model).expanduser())):
        data = record.get("data") or {}
        names += [data.get("dataset_name"), *(item.get("dataset_name") for item in data.get("public_data") or ())]
    return [DATASET_TERMS[name] for name in names if name in DATASET_TERMS]


def inherited_terms(base_model: str | None, dataset_name: str | None) -> Terms | None:
    """The terms an artefact made from ``base_model`` and the real ``dataset_name`` carries (None: unknown)."""
    sources = [*base_model_terms(base_model), DATASET_TERMS.get(dataset_name or "")]
    unique = list(dict.fromkeys(terms for terms in sources if terms is not None))
    if not unique:
        return None
    if len(unique) == 1:
        return unique[0]
    name = "-and-".join(terms.name or terms.license for terms in unique)
    return Terms("other", name, next((terms.link for terms in reversed(unique) if terms.link), None))


def terms_text(terms: Terms | None, base_model: str | None, dataset_name: str | None) -> str:
    """One sentence for the card body: which terms apply and why."""
    if terms is None:
        return (
            f"The terms of the base model `{base_model}` and of the real data `{dataset_name}` apply; neither is "
            "known to rlsyn-trl, so check both before any use or sharing."
        )
    link = f" ({terms.link})" if terms.link else ""
    return (
        f"Licence: `{terms.name or terms.license}`{link}, inherited from the base model `{base_model}` and the real "
        f"data `{dataset_name}` this was made from; the more restrictive of their terms governs any use."
    )


def hub_model_id(name: str | None) -> str | None:
    """``name`` when it is a Hub repo id (owner/name), None for an embedded id or a local path."""
    if not name or name.startswith("embedded:") or Path(name).expanduser().exists() or name.count("/") != 1:
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


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


def eval_results(evaluation: Mapping[str, Mapping[str, float]] | None, dataset: str) -> list[EvalResult]:
    """The adapter's measured results (``evaluate_policies``: identity consistency, face detection rate, reward, on
    fresh samples) for the model-index, one entry per policy and metric."""
    metrics = {"consistency": "identity consistency", "face_rate": "face detection rate", "total": "reward"}
    return [
        EvalResult(
            task_type=PIPELINE_TAG,
            dataset_type=dataset.split("/")[0],
            dataset_name=dataset,
            dataset_config=dataset.split("/")[1] if "/" in dataset else None,
            dataset_split="train",
            metric_type=key,
            metric_name=f"{name}: {label}",
            metric_value=round(float(values[key]), 4),
        )
        for name, values in (evaluation or {}).items()
        for key, label in metrics.items()
        if key in values
    ]


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
    evaluation: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """An identity adapter's card (``identity_adapter.md``) for any stage: ``config`` is the stage's config (its
    data, shots and output fields) and ``generator`` the adapted :class:`~rlsyn_trl.generators.IdentityGenerator`.
    ``evaluation`` (from ``evaluate_policies``) goes into the model-index as measured results."""
    model_name = Path(config.hub_model_id or config.output_dir).name
    dataset = f"{config.dataset_name}/{config.dataset_config}"
    base_id = hub_model_id(base_model)
    terms = inherited_terms(base_model, config.dataset_name)
    results = eval_results(evaluation, dataset)
    card_data = ModelCardData(
        library_name="rlsyn-trl",
        tags=["rlsyn-trl", "diffusers", "dit", "identity-adapter", "synthetic-data", *tags],
        base_model=base_id,
        base_model_relation="adapter" if base_id else None,
        pipeline_tag=PIPELINE_TAG,
        datasets=[config.dataset_name] if config.dataset_name else None,
        model_name=model_name if results else None,
        eval_results=results or None,
        **(terms.metadata() if terms else {}),
    )
    lora_text = (
        f"LoRA rank {lora.r} (alpha {lora.lora_alpha}) was trained on `{', '.join(sorted(lora.target_modules))}`."
        if lora
        else "the backbone was kept frozen (no LoRA)."
    )
    return render_model_card(
        "identity_adapter.md",
        card_data,
        model_name=model_name,
        base_model=base_model,
        stage=stage,
        num_identities=generator.num_classes,
        lora_text=lora_text,
        repo_or_path=config.hub_model_id or config.output_dir,
        first_label=generator.label_names[0],
        dataset=dataset,
        shots_text=f"{config.shots} images per identity, split seed {config.split_seed}",
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        terms=terms_text(terms, base_model, dataset),
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
