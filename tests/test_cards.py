"""Cards a Hub user can trust: inherited terms, lineage and measured results in metadata the Hub's classes read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from rlsyn_trl.cards import DATASET_TERMS, Terms, adapter_card, inherited_terms, size_category


@pytest.mark.parametrize(
    ("count", "category"),
    [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (20_000, "10K<n<100K"), (494_414, "100K<n<1M"),
     (10**7, "10M<n<100M"), (10**13, "n>1T")],
)  # fmt: skip
def test_size_categories_fit_any_size(count, category):
    assert size_category(count) == category


def test_terms_are_inherited_from_base_model_and_data():
    assert inherited_terms("embedded:orl_faces", "orl_faces") == DATASET_TERMS["orl_faces"]
    assert inherited_terms("facebook/DiT-XL-2-256", None) == Terms("cc-by-nc-4.0")
    both = inherited_terms("facebook/DiT-XL-2-256", "casia_webface")
    assert both.license == "other" and both.name == "cc-by-nc-4.0-and-casia-webface-research-only"
    assert both.link == DATASET_TERMS["casia_webface"].link
    market = inherited_terms("facebook/DiT-XL-2-256", "market1501")
    assert market.name.endswith("market-1501-research-only")
    assert inherited_terms("someone/unknown-dit", "my_photos") is None


def test_a_prior_trained_here_passes_on_the_terms_of_its_data(tmp_path):
    """A prior trained with synthetic public faces carries their non-commercial terms into what is made from it."""
    from rlsyn_trl.provenance import stage_record, write_provenance

    public = {"dataset_name": "orl_faces", "dataset_config": "public"}
    faces = {**public, "public_data": [{"dataset_name": "synthetic_faces", "dataset_config": "public"}]}
    for name, data in (("plain", public), ("faces", faces)):
        (tmp_path / name).mkdir()
        write_provenance(tmp_path / name, stage_record("prior", data, model="generator"))
    assert inherited_terms(str(tmp_path / "plain"), "orl_faces") == DATASET_TERMS["orl_faces"]
    terms = inherited_terms(str(tmp_path / "faces"), "orl_faces")
    assert terms.name == "orl-faces-att-cambridge-and-stylegan2-ffhq-non-commercial"
    assert inherited_terms(str(tmp_path / "faces"), "market1501").name.startswith("orl-faces-att-cambridge-and-styl")
    card = render(str(tmp_path / "faces"), "orl_faces")
    assert card.data.to_dict()["license_name"] == terms.name and "stylegan2-ffhq-non-commercial" in card.text


def render(base_model: str, dataset_name: str, evaluation=None) -> ModelCard:
    config = SimpleNamespace(
        hub_model_id="owner/identities",
        output_dir="outputs/x",
        dataset_name=dataset_name,
        dataset_config="private",
        shots=1,
        split_seed=0,
    )
    generator = SimpleNamespace(num_classes=2, label_names=["a", "b"], resolution=64)
    text = adapter_card(config, generator, None, base_model, "ddpo", ["ddpo"], 3, 4, 1e-4, evaluation=evaluation)
    return ModelCard(text)


def test_adapter_card_metadata_carries_terms_lineage_and_results():
    evaluation = {
        "cold start": {"consistency": 0.61, "face_rate": 0.40, "total": 0.01},
        "DDPO": {"consistency": 0.83, "face_rate": 0.55, "total": 0.12},
    }
    card = render("facebook/DiT-XL-2-256", "casia_webface", evaluation)
    data = card.data.to_dict()
    assert data["base_model"] == "facebook/DiT-XL-2-256" and data["base_model_relation"] == "adapter"
    assert data["license"] == "other" and data["license_name"] == "cc-by-nc-4.0-and-casia-webface-research-only"
    assert data["license_link"].startswith("http") and data["datasets"] == ["casia_webface"]
    assert data["pipeline_tag"] == "unconditional-image-generation" and data["library_name"] == "rlsyn-trl"
    results = {(r.metric_name, r.metric_value) for r in card.data.eval_results}
    assert ("DDPO: identity consistency", 0.83) in results and ("cold start: face detection rate", 0.4) in results
    assert all(r.dataset_name == "casia_webface/private" for r in card.data.eval_results)
    again = ModelCardData(**yaml.safe_load(str(card).split("---")[1]))  # the YAML as the Hub reads it
    assert again.eval_results and again.license == "other" and again.base_model == "facebook/DiT-XL-2-256"
    assert "Licence: `cc-by-nc-4.0-and-casia-webface-research-only`" in card.text


def test_embedded_base_has_orl_terms_and_no_hub_lineage():
    data = render("embedded:orl_faces", "orl_faces").data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "orl-faces-att-cambridge"
    assert "base_model" not in data and "base_model_relation" not in data  # not a Hub id: nothing to link
    assert "model-index" not in data  # nothing measured yet: no results claimed
    unknown = render("someone/unknown-dit", "my_photos")
    assert "license" not in unknown.data.to_dict() and "check both" in unknown.text
    assert unknown.data.base_model == "someone/unknown-dit"


def test_dataset_card_metadata(inspected_run):
    card = DatasetCard((inspected_run[0] / "hub" / "README.md").read_text())
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "orl-faces-att-cambridge"  # local base: ORL's
    assert data["size_categories"] == ["n<1K"] and data["source_datasets"] == ["extended|orl_faces"]
    assert data["configs"][0]["data_files"][0]["path"] == "data/train-*"
    assert DatasetCardData(**data).license_link == DATASET_TERMS["orl_faces"].link
    assert "nn_real_index" in card.text and "memorized_by" in card.text
