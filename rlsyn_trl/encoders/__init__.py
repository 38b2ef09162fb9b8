"""Identity feature extractors (phi)."""

from .identity_encoder import IdentityEncoder, IdentityEncoderConfig, load_encoder

__all__ = ["IdentityEncoder", "IdentityEncoderConfig", "load_encoder"]
