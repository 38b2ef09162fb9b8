"""The generation recipe's settings, checked on construction: each field is a YAML key / CLI flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hub import DEFAULT_MAX_MEMORIZATION_RATE
from ..settings import (
    DatasetHubSettings,
    DataSplitSettings,
    EvaluatorSettings,
    InputRecordSettings,
    RewardSettings,
    SamplerSettings,
    check_settings,
    require,
    require_positive,
)
from .audit import AUDIT_CRITERIA, THRESHOLD_SOURCES


@dataclass
class GenerationConfig(
    DataSplitSettings, InputRecordSettings, RewardSettings, SamplerSettings, EvaluatorSettings, DatasetHubSettings
):
    """The generation recipe's settings; each field is a YAML key / CLI flag.

    The split and, for a DDPO policy, the reward (and its encoder) are read from the adapter's provenance when left
    unset; a value that contradicts it is refused, so the dataset's reward columns describe the trained reward.
    """

    adapter: str = field(
        default="outputs/orl_faces/sft", metadata={"help": "Identity adapter: a local folder or a Hub id (owner/name)."}
    )
    adapter_revision: str | None = None
    encoder: str = field(
        default="embedded:orl_faces/encoder",
        metadata={"help": "phi: any kind load_feature_extractor takes (a DDPO policy's own by default)."},
    )
    encoder_revision: str | None = None
    public_dataset_config: str | None = field(
        default="public",
        metadata={"help": "Public identities: reward spread and audit threshold when there is 1 shot; None: none."},
    )
    dataset_cache_dir: str | None = None
    identities: list[str] | None = field(
        default=None, metadata={"help": "Identity names to generate; None: every label of the real data."}
    )
    samples_per_identity: int = 50
    seed: int = field(default=0, metadata={"help": "Base seed; each shard's seed is derived from it and its index."})
    shard_size: int = field(default=100, metadata={"help": "Samples per shard (the unit of resumption)."})
    batch_size: int = 64
    device: str | None = field(default=None, metadata={"help": "cuda, cpu...; None: cuda when available."})
    output_dir: str = "outputs/orl_faces/synthetic"
    audit_percentile: float = field(default=5.0, metadata={"help": "Percentile of same-identity real distances."})
    memorization_criterion: str = field(
        default="either", metadata={"help": f"How pixel and feature tests combine: {', '.join(AUDIT_CRITERIA)}."}
    )
    threshold_source: str = field(
        default="auto", metadata={"help": "auto (private pairs if any, else public), private or public."}
    )
    max_memorization_rate: float = DEFAULT_MAX_MEMORIZATION_RATE
    force_push: bool = field(default=False, metadata={"help": "Push even above max_memorization_rate."})

    def __post_init__(self) -> None:
        check_settings(self)
        require(
            self.samples_per_identity >= 2,
            "samples_per_identity",
            self.samples_per_identity,
            "must be >= 2: the coverage and expression rewards are set-level terms over an identity's samples.",
        )
        require_positive(self, "shard_size", "batch_size")
        require(0 < self.audit_percentile < 100, "audit_percentile", self.audit_percentile, "must be in (0, 100).")
        require(
            self.memorization_criterion in AUDIT_CRITERIA,
            "memorization_criterion",
            self.memorization_criterion,
            f"must be one of {AUDIT_CRITERIA}.",
        )
        require(
            self.threshold_source in THRESHOLD_SOURCES,
            "threshold_source",
            self.threshold_source,
            f"must be one of {THRESHOLD_SOURCES}.",
        )
