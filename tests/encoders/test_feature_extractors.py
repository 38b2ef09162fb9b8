"""Every kind of phi the loader accepts, on tiny models made here: features are L2-normalised, deterministic,
batch-size invariant and equal to the kind's own reference forward; each kind resizes and normalises by itself."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTImageProcessorPil, ViTModel

from rlsyn_trl.encoders import (
    IdentityEncoder,
    IdentityEncoderConfig,
    as_feature_extractor,
    describe_feature_extractor,
    load_feature_extractor,
)
from rlsyn_trl.recognizer import RecognizerConfig, RecognizerModel, build_recognizer

LABELS = ["a", "b", "c"]


def uint8_images(count: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, channels), dtype=np.uint8)


def to_model_range(pixels: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> the project's [N, C, H, W] tensors in [-1, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


def project_encoder(folder):
    torch.manual_seed(0)
    encoder = IdentityEncoder(IdentityEncoderConfig(num_channels=3, image_size=16, widths=[4, 8], embedding_size=8))
    encoder.eval().save_pretrained(folder)

    def reference(pixels):
        return encoder.encode(to_model_range(pixels))  # the encoder's own flip-tested, normalised features

    return str(folder), reference, "rlsyn_encoder", 16


def recognizer(folder):
    torch.manual_seed(0)
    settings = RecognizerConfig(
        output_dir=str(folder), channels=3, resolution=[16], embedding_size=8, hidden_sizes=[8, 16]
    )
    model = RecognizerModel.wrap(build_recognizer(settings, LABELS), settings, LABELS).eval()
    model.save_pretrained(folder)

    def reference(pixels):  # the flip-tested embedding the recognizer's evaluation compares
        images = to_model_range(pixels)
        return F.normalize(model.embed(images) + model.embed(images.flip(-1)), dim=-1)

    return str(folder), reference, "rlsyn_recognizer", 16


def transformers_vit(folder):
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = ViTModel(config).eval()
    model.save_pretrained(folder)
    processor = ViTImageProcessorPil(size={"height": 16, "width": 16}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2] * 3)
    processor.save_pretrained(folder)

    def reference(pixels):  # the checkpoint's own image processor, then the pooled output
        inputs = processor(images=list(pixels), return_tensors="pt", do_resize=False)["pixel_values"]
        return F.normalize(model(pixel_values=inputs).pooler_output, dim=-1)

    return str(folder), reference, "transformers", 16


def transformers_resnet(folder):
    torch.manual_seed(0)
    model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"))
    model.eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"size": {"height": 16, "width": 16}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    )

    def reference(pixels):
        inputs = (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        return F.normalize(model(pixel_values=inputs).pooler_output.flatten(1), dim=-1)

    return str(folder), reference, "transformers", 16


class TinyFaceEmbedder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.head = torch.nn.Linear(8, 6)

    def forward(self, images):
        return self.head(self.conv(images).relu().mean((2, 3)))


def export_onnx(path, size: int, channel_order: str | None = None, dynamic_size: bool = False):
    import onnx

    torch.manual_seed(0)
    model = TinyFaceEmbedder().eval()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, size, size),),
        str(path),
        input_names=["input.1"],
        output_names=["embedding"],
        dynamic_axes={"input.1": axes},
        dynamo=False,
    )
    if channel_order:
        graph = onnx.load(str(path))
        onnx.helper.set_model_props(graph, {"channel_order": channel_order})
        onnx.save(graph, str(path))
    return model


def onnx_arcface(folder, channel_order=None):
    import onnxruntime

    path = folder / "embedder.onnx"
    model = export_onnx(path, 24, channel_order)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def reference(pixels):  # insightface's preprocessing: (x - 127.5) / 127.5, in the model's channel order
        array = pixels[..., ::-1] if channel_order == "BGR" else pixels
        inputs = ((array.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2).copy()
        features = torch.from_numpy(session.run(None, {"input.1": inputs})[0])
        with torch.no_grad():
            torch.testing.assert_close(features, model(torch.from_numpy(inputs)), atol=1e-4, rtol=1e-4)
        return F.normalize(features, dim=-1)

    return str(path), reference, "onnx_arcface", 24


KINDS = {
    "project encoder": project_encoder,
    "recognizer": recognizer,
    "transformers ViT": transformers_vit,
    "transformers ResNet": transformers_resnet,
    "onnx RGB": onnx_arcface,
    "onnx BGR metadata": lambda folder: onnx_arcface(folder, "BGR"),
}


@pytest.fixture(params=list(KINDS), scope="module")
def kind(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    return KINDS[request.param](folder)


def test_features_are_normalised_deterministic_batch_invariant_and_the_reference(kind):
    reference_path, reference, name, size = kind
    phi = load_feature_extractor(reference_path)
    assert phi.kind == name and phi.input_size == (size, size)
    pixels = uint8_images(5, size)
    images = to_model_range(pixels)
    features = phi.encode_batched(images)
    assert features.dtype == torch.float32 and features.shape[0] == 5
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(5))
    assert torch.equal(phi.encode_batched(images), features)
    torch.testing.assert_close(phi.encode_batched(images, batch_size=2), features, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(features, reference(pixels), atol=1e-5, rtol=1e-5)
    assert describe_feature_extractor(reference_path)["kind"] == name


def test_images_are_brought_to_the_model_input_once(kind):
    """Grayscale images at another size give the features of the same images made RGB and resized first."""
    reference_path, _, _, size = kind
    phi = load_feature_extractor(reference_path)
    gray = torch.rand(3, 1, size + 8, size + 8) * 2 - 1
    resized = F.interpolate(gray.expand(-1, 3, -1, -1), size=(size, size), mode="bilinear", antialias=True)
    torch.testing.assert_close(phi.encode_batched(gray), phi.encode_batched(resized), atol=1e-5, rtol=1e-5)


def test_onnx_channel_order_option_overrides_the_metadata_and_open_sizes_default_to_112(tmp_path):
    export_onnx(tmp_path / "bgr.onnx", 24, channel_order="BGR")
    assert load_feature_extractor(tmp_path / "bgr.onnx").channel_order == "BGR"
    assert load_feature_extractor(tmp_path / "bgr.onnx", channel_order="RGB").channel_order == "RGB"
    export_onnx(tmp_path / "open.onnx", 24, dynamic_size=True)
    phi = load_feature_extractor(tmp_path / "open.onnx")
    assert phi.input_size == (112, 112) and phi.channel_order == "RGB"
    assert phi.encode_batched(torch.rand(2, 3, 32, 32) * 2 - 1).shape == (2, 6)


def test_bad_references_fail_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        load_feature_extractor(tmp_path / "missing.onnx")
    pytest.importorskip("onnxruntime")
    (tmp_path / "weights.onnx").write_text("not a model")
    with pytest.raises(ValueError, match=r"weights.onnx is not an ONNX model onnxruntime can load"):
        load_feature_extractor(tmp_path / "weights.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_feature_extractor(tmp_path / "empty")
    with pytest.raises(TypeError, match="IdentityFeatureExtractor"):
        as_feature_extractor(torch.nn.Linear(2, 2))
    model_folder = tmp_path / "vit_no_pooler"
    ViTModel(
        ViTConfig(
            image_size=16,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        ),
        add_pooling_layer=False,
    ).save_pretrained(model_folder)
    with pytest.raises(ValueError, match="missing from the checkpoint"):
        load_feature_extractor(model_folder)


def test_the_embedded_default_is_the_project_encoder():
    phi = load_feature_extractor()
    assert phi.kind == "rlsyn_encoder" and phi.channels == 1 and phi.input_size == (32, 32)
    assert describe_feature_extractor("embedded:orl_faces/encoder")["revision"].startswith("sha256:")


def test_a_feature_extractor_stays_in_eval_mode_so_features_do_not_depend_on_the_batch():
    """The memory bank calls ``encode`` after the audit's ``encode_batched``: both must see BatchNorm's running
    statistics, or the bank's features (and every reward and consistency figure) would follow batch statistics."""
    phi = load_feature_extractor("embedded:orl_faces/encoder")
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batched = phi.encode_batched(images)
    phi.train()
    assert not any(module.training for module in phi.modules())
    torch.testing.assert_close(phi.encode(images[:3]), batched[:3], rtol=0, atol=1e-6)
