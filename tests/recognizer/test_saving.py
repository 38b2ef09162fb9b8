"""A recognizer trained by the ORL recipe is a transformers model: saved with its card and provenance, reloaded by
AutoModel with the same test accuracy, resumed from a checkpoint to the same weights, and usable as phi."""

import json
import os

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModel

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset
from rlsyn_trl.encoders import load_feature_extractor
from rlsyn_trl.provenance import read_provenance
from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments, main
from rlsyn_trl.recognizer import RecognizerConfig, RecognizerModel, train_recognizer

torch.set_num_threads(1)


def tiny_settings(output_dir, **overrides) -> RecognizerConfig:
    values = {"max_steps": 6, "per_device_train_batch_size": 8, "disable_tqdm": True, "logging_steps": 1000}
    return RecognizerConfig(output_dir=str(output_dir), **{**values, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, datasets_cache):
    """The ORL recipe (1 shot, split seed 0) on tiny settings, from the embedded encoder."""
    os.environ["HF_DATASETS_CACHE"] = datasets_cache
    output = tmp_path_factory.mktemp("recognizer")
    script_args = RecognizerScriptArguments(dataset_name="orl_faces", dataset_config="private", shots=1, split_seed=0)
    metrics = main(script_args, tiny_settings(output, model="embedded:orl_faces/encoder"))
    return output, metrics


def test_saved_recognizer_reloads_with_auto_model_and_the_same_accuracy(trained):
    output, metrics = trained
    model = AutoModel.from_pretrained(output).eval()
    assert isinstance(model, RecognizerModel) and model.config.id2label[0] == "s21"
    test = read_provenance(output)["data"]
    assert test["shots"] == 1 and test["split_seed"] == 0 and len(test["train_images"]) == 20
    split = load_identity_dataset("orl_faces", "private", shots=1, seed=0)["test"]
    images, labels = dataset_to_tensors(split, resolution=model.config.image_size, channels=model.config.num_channels)
    with torch.no_grad():
        accuracy = (model(images).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_card_holds_the_data_provenance_and_the_results(trained):
    output, metrics = trained
    card = ModelCard.load(output / "README.md")
    (result,) = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert result.metric_value == pytest.approx(metrics["test_accuracy"]) and result.dataset_split == "test"
    assert read_provenance(output)["data"]["fingerprint"] in card.text and "runtime" not in card.text
    assert read_provenance(output)["model"] == {
        "start": "embedded:orl_faces/encoder",
        "backbone": "rlsyn_identity_encoder",
    }
    assert json.loads((output / "test_results.json").read_text())["test_accuracy"] == metrics["test_accuracy"]


def test_the_saved_recognizer_serves_as_phi(trained):
    output, _ = trained
    phi = load_feature_extractor(str(output))
    assert phi.kind == "rlsyn_recognizer" and phi.input_size == (32, 32) and phi.channels == 1
    features = phi.encode_batched(torch.rand(4, 1, 48, 48) * 2 - 1)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(4))


def test_resume_from_a_checkpoint_gives_the_uninterrupted_weights(orl_private, tmp_path):
    checkpoints = {"save_strategy": "steps", "save_steps": 3}
    train_recognizer(tiny_settings(tmp_path / "whole", **checkpoints), orl_private)
    resumed = tiny_settings(tmp_path / "resumed", resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-3"))
    train_recognizer(resumed, orl_private)
    whole, again = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "resumed"))
    assert whole.keys() == again.keys()
    for name in whole:
        torch.testing.assert_close(again[name], whole[name], rtol=0, atol=1e-6)
    halfway = load_file(tmp_path / "whole" / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(halfway[name], whole[name]) for name in whole)  # the resumed run really trained


def test_resume_with_selection_is_refused(orl_private, tmp_path):
    config = tiny_settings(tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-3"), selection=True)
    with pytest.raises(ValueError, match="selection state"):
        train_recognizer(config, orl_private)


def test_a_push_without_a_repo_is_refused_before_training(tmp_path):
    script_args = RecognizerScriptArguments(dataset_name="orl_faces", dataset_config="private", shots=1, split_seed=0)
    with pytest.raises(ValueError, match="--hub_model_id"):
        main(script_args, tiny_settings(tmp_path, push_to_hub=True))


def test_the_identity_encoder_trains_channels_last_on_a_cpu_to_the_same_weights(orl_private, tmp_path, monkeypatch):
    import rlsyn_trl.recognizer.trainer as trainer_module

    layouts = []
    original_init = trainer_module.RecognizerTrainer.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        weight = self.model.recognizer.backbone.backbone[0][3].weight  # 32 -> 32 channels
        layouts.append(weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous())

    monkeypatch.setattr(trainer_module.RecognizerTrainer, "__init__", recording_init)
    # SGD: its step is proportional to the gradient (Adam's first steps turn a near-zero gradient's sign into a
    # learning-rate-sized step, which makes rounding look like a different run)
    settings = {"model": "embedded:orl_faces/encoder", "max_steps": 4, "optim": "sgd", "learning_rate": 0.1}
    train_recognizer(tiny_settings(tmp_path / "channels_last", **settings), orl_private)
    monkeypatch.setattr(trainer_module, "IdentityEncoder", type("NotThisBackbone", (), {}))  # the default layout
    train_recognizer(tiny_settings(tmp_path / "default", **settings), orl_private)
    assert layouts == [True, False]
    fast, default = (load_file(tmp_path / run / "model.safetensors") for run in ("channels_last", "default"))
    assert fast.keys() == default.keys()
    for name in fast:  # rounding only: the same run in another memory layout
        torch.testing.assert_close(fast[name], default[name], rtol=1e-4, atol=1e-5)
