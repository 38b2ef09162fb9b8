"""The independent identity evaluator: refused when it is phi, and the shipped one is independent of phi."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from trl import TrlParser

from rlsyn_trl.data import dataset_to_tensors
from rlsyn_trl.encoders import load_encoder
from rlsyn_trl.generation.evaluator import check_independent_evaluator
from rlsyn_trl.metrics.identity import nearest_neighbour_accuracy
from rlsyn_trl.settings import SettingsError
from rlsyn_trl.trainers.priors import PriorConfig
from rlsyn_trl.utils.model_sources import resolve_pretrained_folder

torch.set_num_threads(1)
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "orl_faces" / "evaluator.yaml"
PHI, EVALUATOR = "embedded:orl_faces/encoder", "embedded:orl_faces/evaluator"


def test_phi_is_refused_by_id_folder_or_weights(tmp_path):
    check_independent_evaluator(EVALUATOR, None, PHI)
    check_independent_evaluator(None, None, PHI)
    copy = tmp_path / "copy"
    shutil.copytree(resolve_pretrained_folder(PHI), copy)
    for evaluator in (PHI, str(resolve_pretrained_folder(PHI)), str(copy)):
        with pytest.raises(SettingsError, match="--evaluator .* is the reward's feature extractor phi"):
            check_independent_evaluator(evaluator, None, PHI)
    with pytest.raises(FileNotFoundError, match=r"--encoder .*missing.onnx: no such ONNX file"):
        check_independent_evaluator(EVALUATOR, None, str(tmp_path / "missing.onnx"))  # not a Hub id to download


def test_the_shipped_evaluator_is_another_network_trained_on_public_identities_only():
    phi, evaluator = load_encoder(PHI), load_encoder(EVALUATOR)
    assert (evaluator.config.widths, evaluator.config.embedding_size) != (phi.config.widths, phi.config.embedding_size)
    (recipe,) = TrlParser((PriorConfig,)).parse_args_and_config(["--config", str(RECIPE)])
    assert not recipe.train_generator and recipe.dataset_config == "public"
    assert (recipe.encoder_widths, recipe.embedding_size) == (evaluator.config.widths, evaluator.config.embedding_size)
    record = json.loads((resolve_pretrained_folder(EVALUATOR) / "provenance.json").read_text())
    assert record["data"]["dataset_config"] == "public"
    assert record["data"]["identities"] == [f"s{i}" for i in range(1, 21)]  # none of the private s21-s40


def test_the_shipped_evaluator_recognises_unseen_identities(orl_private):
    """1-NN on the private identities it never saw (2 shots, split seed 0): far above chance (5%)."""
    evaluator = load_encoder(EVALUATOR)
    gallery, gallery_labels = dataset_to_tensors(orl_private["train"], 32)
    query, query_labels = dataset_to_tensors(orl_private["test"], 32)
    accuracy = nearest_neighbour_accuracy(
        evaluator.encode_batched(query), query_labels, evaluator.encode_batched(gallery), gallery_labels
    )
    assert accuracy > 0.75
