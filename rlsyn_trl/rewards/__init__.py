"""Identity rewards for Stage 2: the composite reward and the memory bank of real features it compares against."""

from .composite import RewardOptions, composite_reward, median_heuristic_sigma, rbf_kernel, trace_covariance
from .identity_reward import IdentityReward, encode_images
from .memory_bank import MemoryBank

__all__ = [
    "IdentityReward",
    "MemoryBank",
    "RewardOptions",
    "composite_reward",
    "encode_images",
    "median_heuristic_sigma",
    "rbf_kernel",
    "trace_covariance",
]
