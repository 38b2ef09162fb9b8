"""The generation recipe's settings, checked on construction: each field is a YAML key / CLI flag."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..audit import AUDIT_CRITERIA, THRESHOLD_SOURCES
from ..hub import DEFAULT_MAX_MEMORIZATION_RATE


@dataclass
class GenerationConfig:
    """The generation recipe's settings; each field is a YAML key / CLI flag."""

    adapter: str = field(
        default="outputs/orl_faces/sft", metadata={"help": "Identity adapter: a local folder or a Hub id (owner/name)."}
    )
    adapter_revision: str | None = None
    encoder: str = field(default="embedded:orl_faces/encoder", metadata={"help": "Identity encoder (phi)."})
    encoder_revision: str | None = None
    dataset_name: str = field(default="orl_faces", metadata={"help": "The real data the adapter was trained on."})
    dataset_config: str = "private"
    public_dataset_config: str | None = field(
        default="public",
        metadata={"help": "Public identities: reward spread and audit threshold when there is 1 shot; None: none."},
    )
    data_dir: str | None = None
    dataset_cache_dir: str | None = None
    shots: int | None = field(
        default=None, metadata={"help": "Real train images per identity; None: the shots recorded in the adapter."}
    )
    split_seed: int | None = field(default=None, metadata={"help": "None: the split seed recorded in the adapter."})
    identities: list[str] | None = field(
        default=None, metadata={"help": "Identity names to generate; None: every label of the real data."}
    )
    samples_per_identity: int = 50
    seed: int = field(default=0, metadata={"help": "Base seed; each shard's seed is derived from it and its index."})
    shard_size: int = field(default=100, metadata={"help": "Samples per shard (the unit of resumption)."})
    batch_size: int = 64
    num_inference_steps: int = 50
    guidance_scale: float = 2.0
    eta: float = 0.0
    device: str | None = field(default=None, metadata={"help": "cuda, cpu...; None: cuda when available."})
    output_dir: str = "outputs/orl_faces/synthetic"
    audit_percentile: float = field(default=5.0, metadata={"help": "Percentile of same-identity real distances."})
    memorization_criterion: str = field(
        default="either", metadata={"help": f"How pixel and feature tests combine: {', '.join(AUDIT_CRITERIA)}."}
    )
    threshold_source: str = field(
        default="auto", metadata={"help": "auto (private pairs if any, else public), private or public."}
    )
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 0.75, 0.25])
    reward_alpha: float = 0.5
    push_to_hub: bool = False
    hub_dataset_id: str | None = None
    hub_private: bool = field(default=True, metadata={"help": "Hub repos are private unless set to false."})
    max_memorization_rate: float = DEFAULT_MAX_MEMORIZATION_RATE
    force_push: bool = field(default=False, metadata={"help": "Push even above max_memorization_rate."})

    def __post_init__(self) -> None:
        if self.samples_per_identity < 2:
            raise ValueError(
                "samples_per_identity must be >= 2: the coverage and expression rewards are set-level terms over "
                f"the samples of an identity (got {self.samples_per_identity})."
            )
        for name in ("shard_size", "batch_size", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.memorization_criterion not in AUDIT_CRITERIA:
            raise ValueError(f"memorization_criterion must be one of {AUDIT_CRITERIA}")
        if self.threshold_source not in THRESHOLD_SOURCES:
            raise ValueError(f"threshold_source must be one of {THRESHOLD_SOURCES}")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub needs hub_dataset_id (owner/name).")
