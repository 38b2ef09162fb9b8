"""phi from an ONNX face embedder in the insightface ArcFace convention, run with onnxruntime (``pip install
rlsyn-trl[onnx]``).

The convention: aligned faces at the model's input size (112 x 112 when its graph leaves it open), pixels
normalised as ``(x - 127.5) / 127.5``, output one embedding per image. insightface's own ``ArcFaceONNX`` feeds
its recognition models RGB (``cv2.dnn.blobFromImages(..., swapRB=True)`` on OpenCV's BGR images), so RGB is the
default; a model whose metadata says ``channel_order: BGR`` (``onnx.helper.set_model_props``), or the
``channel_order`` option, gets BGR.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..utils.io import DamagedFileError
from .feature_extractor import NO_NORMALISATION, IdentityFeatureExtractor

ARCFACE_INPUT_SIZE = (112, 112)
CHANNEL_ORDER_KEY = "channel_order"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "An .onnx feature extractor runs with onnxruntime, which is not installed: pip install 'rlsyn-trl[onnx]' "
            "(or onnxruntime-gpu on a CUDA machine)."
        ) from error
    return onnxruntime


def file_revision(path: str | Path) -> str:
    """A content hash of the model file (a retrained file in place gets another revision)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()[:16]


class OnnxArcFaceExtractor(IdentityFeatureExtractor):
    """An ArcFace-convention ONNX embedder. ``(x - 127.5) / 127.5`` of pixels in ``[0, 255]`` is the project's
    ``[-1, 1]`` range itself, so preprocessing only orders the channels and resizes. Inference runs on the CUDA
    provider when onnxruntime has it, else on the CPU with torch's thread count."""

    kind = "onnx_arcface"

    def __init__(self, path: str | Path, channel_order: str | None = None) -> None:
        onnxruntime = import_onnxruntime()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        available = onnxruntime.get_available_providers()
        providers = [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider") if name in available]
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own classes (InvalidProtobuf, Fail) for a bad file
            raise DamagedFileError(
                f"--encoder {path} is not an ONNX model onnxruntime can load ({type(error).__name__}): an .onnx "
                "feature extractor is an exported face embedder (e.g. insightface's w600k_r50.onnx). Check the "
                "path, or export the model again."
            ) from error
        model_input = self.session.get_inputs()[0]
        shape = list(model_input.shape)
        if len(shape) != 4:
            raise ValueError(f"{path}: an image embedder takes [N, C, H, W] input; this one takes {shape}.")
        channels = shape[1] if isinstance(shape[1], int) else 3
        static = all(isinstance(side, int) for side in shape[2:])
        input_size = tuple(shape[2:]) if static else ARCFACE_INPUT_SIZE
        metadata = self.session.get_modelmeta().custom_metadata_map
        order = (channel_order or metadata.get(CHANNEL_ORDER_KEY) or "RGB").upper()
        super().__init__(str(path), input_size, channels, *NO_NORMALISATION, channel_order=order)
        self.input_name = model_input.name

    def forward_features(self, inputs: torch.Tensor) -> torch.Tensor:
        array = inputs.detach().float().cpu().contiguous().numpy()
        features = self.session.run(None, {self.input_name: array})[0]  # the first output: the embedding
        return torch.from_numpy(features).to(inputs.device).flatten(1)
