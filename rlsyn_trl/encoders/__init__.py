"""Identity feature extractors (phi): the project's encoder, and one interface over every kind of model that can
serve as phi (:func:`load_feature_extractor`)."""

from .feature_extractor import (
    IdentityFeatureExtractor,
    ProjectEncoderExtractor,
    RecognizerExtractor,
    TransformersExtractor,
    as_feature_extractor,
)
from .identity_encoder import IdentityEncoder, IdentityEncoderConfig, load_encoder
from .loading import DEFAULT_FEATURE_EXTRACTOR, describe_feature_extractor, load_feature_extractor

__all__ = [
    "DEFAULT_FEATURE_EXTRACTOR",
    "IdentityEncoder",
    "IdentityEncoderConfig",
    "IdentityFeatureExtractor",
    "ProjectEncoderExtractor",
    "RecognizerExtractor",
    "TransformersExtractor",
    "as_feature_extractor",
    "describe_feature_extractor",
    "load_encoder",
    "load_feature_extractor",
]
