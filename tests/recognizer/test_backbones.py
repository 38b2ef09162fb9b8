"""The paper's downstream backbones (IResNet for faces, the BNNeck ReID baseline over a ResNet or a ViT at 256x128),
scaled down: each trains one step through ``train_recognizer`` and is evaluated by the benchmark's protocol."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ResNetConfig, ResNetModel, ViTConfig, ViTModel

from rlsyn_trl.recognizer import RecognizerConfig, build_recognizer, train_recognizer
from rlsyn_trl.recognizer.backbones import IResNetConfig, IResNetForImageClassification, iresnet_config

RNG = np.random.default_rng(0)
COLOURS = RNG.integers(0, 256, (8, 3))


def picture(identity: int, size: tuple[int, int]) -> Image.Image:
    """An identity's colour plus noise, ``size`` = (width, height)."""
    pixels = COLOURS[identity] + RNG.normal(0, 25, (size[1], size[0], 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def faces(identities: int = 4, per_identity: int = 3, side: int = 16) -> datasets.DatasetDict:
    names = [f"id{i}" for i in range(identities)]
    labels = [i for i in range(identities) for _ in range(per_identity)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    train = datasets.Dataset.from_dict(
        {"image": [picture(i, (side, side)) for i in labels], "label": labels}, features=features
    )
    return datasets.DatasetDict(train=train)


def face_pairs(side: int = 16, pairs: int = 20) -> datasets.Dataset:
    same = [index % 2 == 0 for index in range(pairs)]
    first = [index % 4 for index in range(pairs)]
    second = [a if s else (a + 1) % 4 for a, s in zip(first, same)]
    features = datasets.Features(
        {"image_a": datasets.Image(), "image_b": datasets.Image(), "issame": datasets.Value("bool"),
         "fold": datasets.Value("int32")}
    )  # fmt: skip
    return datasets.Dataset.from_dict(
        {
            "image_a": [picture(i, (side, side)) for i in first],
            "image_b": [picture(i, (side, side)) for i in second],
            "issame": same,
            "fold": [index // 2 for index in range(pairs)],
        },
        features=features,
    )


def persons(box: tuple[int, int] = (8, 16)) -> datasets.DatasetDict:
    """ReID splits: 4 training identities x 4 boxes; 2 test identities, one query and two gallery boxes each."""
    train_labels = [i for i in range(4) for _ in range(4)]
    train = datasets.Dataset.from_dict(
        {"image": [picture(i, box) for i in train_labels], "label": train_labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcd"))}),
    )
    reid = datasets.Features(
        {"image": datasets.Image(), "person_id": datasets.Value("int32"), "camera_id": datasets.Value("int32")}
    )
    query = datasets.Dataset.from_dict(
        {"image": [picture(i, box) for i in (4, 5)], "person_id": [4, 5], "camera_id": [1, 1]}, features=reid
    )
    gallery = datasets.Dataset.from_dict(
        {"image": [picture(i, box) for i in (4, 4, 5, 5)], "person_id": [4, 4, 5, 5], "camera_id": [2, 3, 2, 3]},
        features=reid,
    )
    return datasets.DatasetDict(train=train, query=query, gallery=gallery)


def reid_config(tmp_path, model: str, **overrides) -> RecognizerConfig:
    values = dict(
        output_dir=str(tmp_path / "run"),
        model=model,
        reid_neck=True,
        loss="cross_entropy",
        label_smoothing=0.1,
        triplet_weight=1.0,
        identities_per_batch=4,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=4,
        resolution=[32, 16],
        channels=3,
        max_steps=1,
        l2_adam=True,
        learning_rate=3.5e-4,
        report_to="none",
        disable_tqdm=True,
    )
    return RecognizerConfig(**{**values, **overrides})


def test_iresnet50_is_the_arcface_torch_architecture():
    model = IResNetForImageClassification(iresnet_config("iresnet-50", num_labels=10))
    stages = model.iresnet.stages
    assert [len(stage) for stage in stages] == [3, 4, 14, 3]
    assert [stage[0].body[1].out_channels for stage in stages] == [64, 128, 256, 512]
    assert model.iresnet.fc.in_features == 512 * 7 * 7 and model.iresnet.fc.out_features == 512
    assert sum(isinstance(module, torch.nn.PReLU) for module in model.modules()) == 1 + 24
    assert not model.iresnet.features.weight.requires_grad  # the embedding BN's scale is fixed at 1
    backbone = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("classifier"))
    assert backbone == pytest.approx(43.6e6, rel=0.01)  # arcface_torch's r50: 43.6M parameters


def test_iresnet_recognizer_trains_one_step_and_is_verified(tmp_path):
    folder = tmp_path / "iresnet"
    IResNetConfig(layers=[1, 1, 1, 1], widths=[4, 8, 8, 16], embedding_size=16).save_pretrained(folder)
    config = RecognizerConfig(
        output_dir=str(tmp_path / "run"),
        model=str(folder),
        from_scratch=True,
        loss="cosface",
        cosface_scale=64.0,
        cosface_margin=0.35,
        resolution=16,  # the folder's 112 is replaced: the head follows the input size
        channels=3,
        optim="sgd",
        optim_args="momentum=0.9",
        learning_rate=0.1,
        per_device_train_batch_size=8,
        max_steps=1,
        report_to="none",
        disable_tqdm=True,
    )
    real = faces()
    torch.manual_seed(0)
    model = build_recognizer(config, real["train"].features["label"].names)
    assert isinstance(model.backbone, IResNetForImageClassification) and model.cosface.W.shape == (16, 4)
    assert model.backbone.iresnet.fc.in_features == 16 * 1 * 1
    metrics = train_recognizer(config, real, verification={"lfw": face_pairs()})
    assert 0 <= metrics["test_lfw_accuracy"] <= 1 and metrics["test_verification_mean_accuracy"] > 0


def test_bot_resnet_trains_one_step_and_is_evaluated_by_retrieval(tmp_path):
    folder = tmp_path / "resnet"
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(folder)
    config = reid_config(tmp_path, str(folder))
    names = list("abcd")
    torch.manual_seed(0)
    model = build_recognizer(config, names).train()
    backbone = model.backbone
    pixels = torch.randn(8, 3, 32, 16)
    # last stride 1: the last stage keeps the 8x4 map of a 32x16 input (stride 2 would give 4x2)
    assert backbone.backbone(pixels).last_hidden_state.shape[-2:] == (8, 4)
    assert not backbone.bnneck.bias.requires_grad and backbone.classifier.bias is None
    labels = torch.arange(4).repeat_interleave(2)
    output = model(pixels, labels)
    features = backbone.features(pixels)
    logits = backbone.classifier(backbone.bnneck(features))
    triplet = model.triplet(features, labels, model.miner(features, labels))  # on f_t, before the neck
    ce = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    torch.testing.assert_close(output.loss, ce + triplet)
    model.eval()
    torch.testing.assert_close(model.embed(pixels), backbone.bnneck(backbone.features(pixels)))  # f_i at test time

    metrics = train_recognizer(config, persons())
    assert {"test_mAP", "test_rank1", "test_rank5"} <= set(metrics) and 0 <= metrics["test_mAP"] <= 1

    backbone.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "saved").eval()
    backbone.eval()
    torch.testing.assert_close(reloaded(pixels).logits, backbone(pixels).logits)
    assert reloaded.backbone.encoder.stages[-1].layers[0].shortcut.convolution.stride == (1, 1)


@pytest.mark.parametrize("from_scratch", [False, True])
def test_vit_at_256x128_layout_trains_one_step_and_is_evaluated(tmp_path, from_scratch):
    folder = tmp_path / "vit"
    # a square pretrained grid (as ViT-B/16 at 224): interpolated to the 32x16 input; from scratch: made at 32x16
    vit = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)  # fmt: skip
    ViTModel(vit).save_pretrained(folder)
    config = reid_config(tmp_path, str(folder), from_scratch=from_scratch)
    model = build_recognizer(config, list("abcd")).train()
    backbone = model.backbone
    assert backbone.backbone.config.image_size == ([32, 16] if from_scratch else 32)
    pixels = torch.randn(8, 3, 32, 16)
    assert backbone.embed(pixels).shape == (8, 16)
    output = model(pixels, torch.arange(4).repeat_interleave(2))
    output.loss.backward()
    assert backbone.backbone.embeddings.position_embeddings.grad.abs().sum() > 0
    metrics = train_recognizer(config, persons())
    assert {"test_mAP", "test_rank1"} <= set(metrics) and 0 <= metrics["test_rank1"] <= 1


def test_reid_neck_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="reid_neck needs loss='cross_entropy'"):
        RecognizerConfig(output_dir=str(tmp_path), reid_neck=True, loss="cosface")
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        RecognizerConfig(output_dir=str(tmp_path), label_smoothing=1.0)
