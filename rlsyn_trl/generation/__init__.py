"""Synthetic dataset generation: sample an identity adapter, score every sample, audit it, write it, publish it.

``write_synthetic_dataset`` (driven by ``recipes/generate.py``) draws ``samples_per_identity`` images for each
identity, in SHARDS of ``shard_size`` samples. Each shard has its own seed, derived from the base seed and the shard
index alone, and is written to a temporary file then renamed into place: a killed run resumes at the first missing
shard and the result is the same, sample for sample, wherever it was interrupted. A manifest holds a fingerprint of
everything that decides the samples (adapter and its revision, identities, counts, seeds, sampler settings), so a
folder holding another run's shards is refused instead of silently mixed.

Once every shard exists, the samples are scored against the real TRAINING images: the composite reward terms (memory
bank, groups = all samples of an identity), the memorisation audit (:mod:`.audit`) and the face detector
(:mod:`.realism`). Held-out real images, when the dataset has them, get the same audit and checks as the
reference floor. The result is written as ``output_dir/dataset`` (``datasets.load_from_disk``) and
``output_dir/hub`` (parquet files + README card, the Hub layout ``datasets.load_dataset`` reads), and is pushed to a
PRIVATE Hub repo when asked (``push_dataset``), unless its memorisation rate is above ``max_memorization_rate``.
Every output folder holds the run's ``provenance.json``: the split, the adapter chain and the reward it was scored
with, which is the reward the policy was trained with.
"""

from .config import GenerationConfig
from .generate import push_dataset, write_synthetic_dataset
from .outputs import AUDIT_FILE, CARD_TEMPLATE, DATASET_DIR, HUB_DIR, HUB_FILE_BYTES
from .scoring import dataset_features
from .shards import (
    MANIFEST,
    RUN_FORMAT,
    SHARD_FEATURES,
    SHARDS_DIR,
    SamplingPlan,
    shard_path,
    shard_seed,
)

__all__ = [
    "AUDIT_FILE",
    "CARD_TEMPLATE",
    "DATASET_DIR",
    "HUB_DIR",
    "HUB_FILE_BYTES",
    "MANIFEST",
    "RUN_FORMAT",
    "SHARDS_DIR",
    "SHARD_FEATURES",
    "GenerationConfig",
    "SamplingPlan",
    "dataset_features",
    "push_dataset",
    "shard_path",
    "shard_seed",
    "write_synthetic_dataset",
]
