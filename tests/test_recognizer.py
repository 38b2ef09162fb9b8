"""The downstream recognizer: a tiny ORL run learns, bad synthetic sets are refused, the metric counts right."""

import logging

import datasets
import pytest
import torch
from transformers.modeling_outputs import ImageClassifierOutput

from rlsyn_trl.data import load_identity_dataset
from rlsyn_trl.encoders import IdentityEncoder, IdentityEncoderConfig
from rlsyn_trl.metrics import load_metric
from rlsyn_trl.recognizer import (
    MixedBatchSampler,
    MixedIdentityDataset,
    RecognizerConfig,
    build_recognizer,
    imprint_centres,
    synthetic_blocks,
    train_recognizer,
)

CHANCE = 1 / 20


@pytest.fixture(scope="module")
def orl_one_shot(datasets_cache):
    return load_identity_dataset("orl_faces", "private", shots=1, seed=0, cache_dir=datasets_cache)


def tiny_config(tmp_path, **overrides) -> RecognizerConfig:
    settings = {"max_steps": 40, "disable_tqdm": True, "logging_steps": 1000, **overrides}
    return RecognizerConfig(output_dir=str(tmp_path), **settings)


def test_identification_accuracy_metric_matches_hand_count():
    metric = load_metric("identification_accuracy")
    # probes 0, 1 and 3 are right, 2 and 4 wrong: 3 / 5
    result = metric.compute(predictions=[3, 1, 2, 0, 2], references=[3, 1, 1, 0, 0])
    assert result == {"accuracy": pytest.approx(0.6)}


def test_cosface_per_sample_loss_matches_pytorch_metric_learning(tmp_path):
    model = build_recognizer(tiny_config(tmp_path, loss="cosface"), [f"s{i}" for i in range(21, 41)])
    embeddings, labels = torch.randn(6, 128), torch.tensor([0, 3, 3, 7, 19, 1])
    outputs = ImageClassifierOutput(logits=model.cosface.get_cosine(embeddings))
    torch.testing.assert_close(model.per_sample_loss(outputs, labels).mean(), model.cosface(embeddings, labels))


@pytest.fixture
def encoder_folder(tmp_path):
    torch.manual_seed(0)
    encoder = IdentityEncoder(IdentityEncoderConfig(image_size=32, widths=[8, 16], embedding_size=12))
    encoder.save_pretrained(tmp_path / "encoder")
    return str(tmp_path / "encoder"), encoder


def test_encoder_start_loads_the_pretrained_weights(encoder_folder, tmp_path):
    path, encoder = encoder_folder
    model = build_recognizer(tiny_config(tmp_path, model=path), ["a", "b", "c"])
    assert isinstance(model.backbone, IdentityEncoder)
    torch.testing.assert_close(model.backbone.state_dict(), encoder.state_dict())
    assert model.cosface.W.shape == (12, 3)
    fresh = build_recognizer(tiny_config(tmp_path, model=path, from_scratch=True), ["a", "b", "c"])
    assert not torch.equal(fresh.backbone.head[2].weight, encoder.head[2].weight)
    with pytest.raises(ValueError, match="loss='cosface'"):
        build_recognizer(tiny_config(tmp_path, model=path, loss="cross_entropy"), ["a", "b", "c"])


def test_imprinted_centres_are_normalised_class_means(encoder_folder, tmp_path):
    path, _ = encoder_folder
    model = build_recognizer(tiny_config(tmp_path, model=path), ["a", "b", "c"])
    images, labels = torch.rand(5, 1, 32, 32) * 2 - 1, torch.tensor([0, 2, 0, 2, 2])
    untouched = model.cosface.W[:, 1].clone()
    imprint_centres(model.train(), images, labels)
    assert model.training  # restored after the eval-mode embedding
    with torch.no_grad():
        features = torch.nn.functional.normalize(model.eval().embed(images), dim=-1)
    for label, rows in ((0, [0, 2]), (2, [1, 3, 4])):
        expected = torch.nn.functional.normalize(features[rows].mean(0), dim=0)
        torch.testing.assert_close(model.cosface.W[:, label], expected)
    torch.testing.assert_close(model.cosface.W[:, 1], untouched)  # a class without images keeps its random centre


def test_synthetic_first_real_last_schedule(tmp_path):
    dataset = MixedIdentityDataset(
        torch.zeros(4, 1, 2, 2), torch.arange(4), torch.zeros(8, 1, 2, 2), torch.arange(8) % 4
    )
    sampler = MixedBatchSampler(dataset, 4, 0.5, torch.Generator().manual_seed(0), synthetic_blocks=5)
    blocks = torch.tensor(list(sampler) + list(sampler)).view(-1, 4)  # two epochs of 3 blocks: the count carries over
    synthetic_per_block = (blocks >= dataset.num_real).sum(dim=1)
    assert synthetic_per_block.tolist() == [2, 2, 2, 2, 2, 0]
    uniform = MixedBatchSampler(dataset, 4, None, torch.Generator().manual_seed(0), synthetic_blocks=1)
    late_blocks = torch.tensor(list(uniform) + list(uniform))[4:]
    assert (late_blocks < dataset.num_real).all()  # uniform mixing too draws real images only after the phase
    config = tiny_config(tmp_path, max_steps=300, synthetic_until=0.7, gradient_accumulation_steps=2)
    assert synthetic_blocks(config) == 420 and synthetic_blocks(tiny_config(tmp_path)) is None
    with pytest.raises(ValueError, match="synthetic_until must be in"):
        tiny_config(tmp_path, synthetic_until=0.0)


SYNTHETIC_ROWS = torch.tensor([False, False, True, True, True, True])


def _moved(parameters) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)


@pytest.mark.parametrize(
    "setting, trains_backbone, moves_centres",
    [(None, True, True), ("synthetic_trains_backbone", False, True), ("synthetic_moves_centres", True, False)],
)
def test_synthetic_images_can_be_kept_off_the_backbone_or_the_class_centres(
    tmp_path, setting, trains_backbone, moves_centres
):
    """Each switch removes one path of the synthetic images' gradient; real images in the batch keep both."""
    config = tiny_config(tmp_path, **({setting: False} if setting else {}))
    model = build_recognizer(config, [f"s{i}" for i in range(4)]).train()
    images, labels, synthetic = torch.randn(6, 1, 32, 32), torch.arange(6) % 4, SYNTHETIC_ROWS
    model(images[synthetic], labels[synthetic], synthetic[synthetic]).loss.backward()
    assert _moved(model.backbone.parameters()) == trains_backbone
    assert _moved([model.cosface.W]) == moves_centres
    model.zero_grad()
    model(images, labels, synthetic).loss.backward()
    assert _moved(model.backbone.parameters()) and _moved([model.cosface.W])
    model.eval()  # identification scores every image the same way
    torch.testing.assert_close(model(images, synthetic=synthetic).logits, model(images).logits)
    if setting:
        with pytest.raises(ValueError, match=f"{setting}=False needs"):
            tiny_config(tmp_path, **{setting: False}, loss="cross_entropy")


def test_tiny_one_shot_run_beats_chance(orl_one_shot, tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="rlsyn_trl.recognizer.trainer"):
        metrics = train_recognizer(tiny_config(tmp_path, logging_steps=20), orl_one_shot)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["test_accuracy"] > 3 * CHANCE
    # Quiet mode: readable log lines, no printed dicts.
    assert "{'" not in capsys.readouterr().out
    assert "recognizer step 20/40: loss" in caplog.text and "test_accuracy" in caplog.text


def test_selection_run_scores_every_synthetic_image(orl_one_shot, tmp_path):
    """Real held-out photos stand in for a synthetic set; selection runs inside the Trainer with CosFace."""
    pool = orl_one_shot["test"].select(range(0, 180, 9))
    config = tiny_config(
        tmp_path,
        max_steps=6,
        selection=True,
        round_every=3,
        candidates_per_round=10,
        scored_dataset_path=str(tmp_path / "scored"),
    )
    metrics = train_recognizer(config, orl_one_shot, pool)
    scored = datasets.load_from_disk(config.scored_dataset_path)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert scored.column_names == [*pool.column_names, "utility", "selection_weight"]
    assert torch.isfinite(torch.tensor(scored["utility"])).all()  # 2 rounds x 10 candidates cover the 20 images
    assert sum(scored["selection_weight"]) == pytest.approx(len(pool), rel=1e-4)


def test_synthetic_set_with_another_label_space_is_refused(orl_one_shot, tmp_path):
    image = orl_one_shot["train"][0]["image"]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    other_names = datasets.Dataset.from_dict({"image": [image], "label": [1]}, features=features)
    with pytest.raises(ValueError, match="label space does not match"):
        train_recognizer(tiny_config(tmp_path), orl_one_shot, other_names)

    plain_ints = datasets.Dataset.from_dict({"image": [image], "label": [1]})
    with pytest.raises(ValueError, match="label space does not match"):
        train_recognizer(tiny_config(tmp_path), orl_one_shot, plain_ints)


def test_hub_repos_are_private_unless_the_user_says_otherwise(tmp_path):
    from rlsyn_trl.recognizer import RecognizerConfig

    assert RecognizerConfig(output_dir=str(tmp_path)).hub_private_repo is True
    assert RecognizerConfig(output_dir=str(tmp_path), hub_private_repo=False).hub_private_repo is False
