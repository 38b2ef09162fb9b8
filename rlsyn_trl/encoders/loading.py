"""The one loader of phi: ``load_feature_extractor(reference)`` for every kind a user may have.

``reference`` is an embedded id (``embedded:orl_faces/encoder``), a local folder, a Hub id or an ``.onnx`` file.
The kind follows from what is there: an ``.onnx`` file (or a folder holding one and no ``config.json``) is an
ONNX ArcFace embedder; otherwise ``config.json``'s ``model_type`` says whether it is the project's encoder, a
recognizer saved by ``train_recognizer``, or any other ``transformers`` vision model. Both of the latter load with
``AutoModel``, which knows the recognizer (:mod:`rlsyn_trl.auto_classes`): the recognizer builds on this package, so
phi's loader reads only the recognizer's config class, never its model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..recognizer.model_configs import RecognizerModelConfig
from ..utils.model_sources import resolve_pretrained_folder
from .feature_extractor import (
    IdentityFeatureExtractor,
    ProjectEncoderExtractor,
    RecognizerExtractor,
    TransformersExtractor,
    processor_settings,
)
from .identity_encoder import IdentityEncoder, IdentityEncoderConfig

DEFAULT_FEATURE_EXTRACTOR = "embedded:orl_faces/encoder"
PREPROCESSOR_CONFIG = "preprocessor_config.json"


def onnx_file(reference: str | os.PathLike) -> Path | None:
    """The ONNX model ``reference`` names: an ``.onnx`` file, or a local folder with exactly one and no config.json."""
    path = Path(reference).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"--encoder {reference}: no such ONNX file.")
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        candidates = sorted(path.glob("*.onnx"))
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise ValueError(f"{path} holds several .onnx files ({[c.name for c in candidates]}); name one.")
    return None


def feature_extractor_kind(folder: Path) -> str:
    """``rlsyn_encoder``, ``rlsyn_recognizer`` or ``transformers``, from the folder's ``config.json``."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json: a feature extractor is a transformers model folder (the project's "
            "encoder, a recognizer saved by train_recognizer, an AutoModel checkpoint) or an .onnx file."
        )
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type == IdentityEncoderConfig.model_type:
        return ProjectEncoderExtractor.kind
    if model_type == RecognizerModelConfig.model_type:
        return RecognizerExtractor.kind
    return TransformersExtractor.kind


def load_feature_extractor(
    reference: str | os.PathLike = DEFAULT_FEATURE_EXTRACTOR,
    revision: str | None = None,
    *,
    channel_order: str | None = None,
) -> IdentityFeatureExtractor:
    """phi from ``reference``, in eval mode with frozen weights. ``channel_order`` (``"RGB"``/``"BGR"``) overrides
    an ONNX model's metadata; the other kinds state their own input."""
    path = onnx_file(reference)
    if path is not None:
        from .onnx_extractor import OnnxArcFaceExtractor

        return OnnxArcFaceExtractor(path, channel_order=channel_order)
    folder = resolve_pretrained_folder(reference, revision)
    kind = feature_extractor_kind(folder)
    if kind == ProjectEncoderExtractor.kind:
        return ProjectEncoderExtractor(IdentityEncoder.from_pretrained(folder).eval(), str(reference))
    from transformers import AutoModel  # it knows the saved recognizer once rlsyn_trl is imported (auto_classes)

    if kind == RecognizerExtractor.kind:
        return RecognizerExtractor(AutoModel.from_pretrained(folder), str(reference))
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    if info["missing_keys"]:  # e.g. a pooler the checkpoint never trained: its features would be random
        missing = sorted(info["missing_keys"])
        raise ValueError(
            f"{reference}: {len(missing)} weight(s) of {type(model).__name__} are missing from the checkpoint "
            f"({missing[:4]}...), so its features would come from random layers. Use a checkpoint that holds the "
            "whole model, pooling layer included."
        )
    processor_path = folder / PREPROCESSOR_CONFIG
    processor = json.loads(processor_path.read_text()) if processor_path.is_file() else {}
    settings = processor_settings(processor, getattr(model.config, "image_size", None), str(reference))
    return TransformersExtractor(model, str(reference), *settings)


def describe_feature_extractor(reference: str | os.PathLike, revision: str | None = None) -> dict:
    """The provenance entry of phi without loading it: reference, kind and the revision of its weights."""
    from ..provenance import folder_revision

    path = onnx_file(reference)
    if path is not None:
        from .onnx_extractor import OnnxArcFaceExtractor, file_revision

        return {"reference": str(reference), "kind": OnnxArcFaceExtractor.kind, "revision": file_revision(path)}
    folder = resolve_pretrained_folder(reference, revision)
    return {"reference": str(reference), "kind": feature_extractor_kind(folder), "revision": folder_revision(folder)}
