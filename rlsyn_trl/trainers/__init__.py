"""Trainers: cold start (SFT of identity embedders) and reward-guided DDPO."""

from .cold_start import ColdStartConfig, prepare_identity_generator, train_cold_start

__all__ = ["ColdStartConfig", "prepare_identity_generator", "train_cold_start"]
