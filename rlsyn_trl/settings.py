"""Settings groups shared by the stages, each defined once and composed into the stage configs.

A stage config (``ColdStartConfig``, ``RLSynDDPOConfig``, ``GenerationConfig``, the recognizer's script arguments)
inherits the groups it needs, so a YAML key or CLI flag means the same thing, with the same default and the same
validation, in every stage:

- :class:`DataSplitSettings`: which real identities and which of their images train (dataset, config, shots,
  split seed). Unset fields are read from the input artefact's provenance (an adapter records the split it was
  trained on), and a set field that contradicts it is refused (:mod:`rlsyn_trl.provenance`).
- :class:`StreamingSettings`: the real training images streamed from where they are kept instead of built first.
- :class:`RewardSettings`: the composite reward's weights and constants, the flags of one
  :class:`~rlsyn_trl.rewards.RewardOptions` (its defaults and checks).
- :class:`LoraSettings`: LoRA on the DiT backbone.
- :class:`ReferenceSettings`: reference-guided starts (SDEdit): the chain begins at a real training image noised
  to an intermediate step instead of pure noise; shared by generation, DDPO and evaluation.
- :class:`SamplerSettings`: the DDIM sampler of generation and sample grids.
- :class:`EvaluatorSettings`: an identity evaluator the reward never saw, for the reported identity consistency.
- :class:`HubSettings`: publishing, private unless the user says otherwise.
- :class:`RuntimeSettings`: seed and precision (``auto``: bf16 only where the device computes it natively).
- :class:`EncoderTrainingSettings`: the identity feature extractor phi and its CosFace training (the priors and the
  encoder pre-training recipe).

Each group checks its own values through :func:`check_settings`, which a stage config calls from its
``__post_init__``, so a bad value fails when the YAML and flags are parsed, with the flag and the fix named.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from peft import LoraConfig

from .rewards.composite import DEFAULT_REWARD, RewardOptionError, RewardOptions
from .utils.checks import (
    SettingsError,
    parse_guidance_interval,
    parse_reference_strength,
    require,
    require_positive,
)
from .utils.launch import PRECISIONS

DEFAULT_LORA_TARGETS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2"]


def check_settings(config: Any) -> None:
    """Run the ``check`` of every settings group ``config`` inherits, each once, most general first."""
    for cls in reversed(type(config).__mro__):
        check = cls.__dict__.get("check")
        if check is not None and issubclass(cls, SettingsGroup):
            check(config)


class SettingsGroup:
    """Base of the groups: ``check(self)`` validates the group's own fields."""

    def check(self) -> None:  # pragma: no cover - overridden
        pass


@dataclass
class DataSplitSettings(SettingsGroup):
    """Which real identity images a stage uses. Unset fields come from the input artefact, else the defaults."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A registered identity benchmark (orl_faces, market1501, ...), a Hub dataset id (owner/name) "
            "or a local folder laid out like one (Parquet shards, Arrow files, an imagefolder tree). Unset: the input "
            "artefact's, else orl_faces."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Its configuration (ORL: private). Unset: the input artefact's."}
    )
    data_dir: str | None = field(default=None, metadata={"help": "A local copy of the benchmark's files."})
    dataset_revision: str | None = field(
        default=None,
        metadata={"help": "Branch, tag or commit of a Hub dataset. Unset: the input artefact's commit, else main."},
    )
    image_column: str | None = field(
        default=None, metadata={"help": "A Hub dataset's or folder's image column. Unset: its only Image feature."}
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "Its identity column. Unset: its only ClassLabel, else its only string column."},
    )
    shots: int | None = field(
        default=None,
        metadata={
            "help": "Real training images per identity (ORL: 1, 2, 3 or 5). Unset: the input artefact's, "
            "else the dataset's default."
        },
    )
    split_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of each identity's train/test split. Unset: the input artefact's, else 0."},
    )

    def check(self) -> None:
        if self.dataset_name is not None:
            from .data import IDENTITY_BUILDERS, is_user_dataset
            from .data.user_data import is_local_dataset

            registered, local = self.dataset_name in IDENTITY_BUILDERS, is_local_dataset(self.dataset_name)
            require(
                registered or is_user_dataset(self.dataset_name),
                "dataset_name",
                self.dataset_name,
                f"not a registered identity benchmark ({sorted(IDENTITY_BUILDERS)}), an existing folder or a Hub "
                "dataset id (owner/name).",
            )
            for name in ("dataset_revision", "image_column", "label_column"):
                value = getattr(self, name)
                require(
                    value is None or not registered,
                    name,
                    value,
                    f"{self.dataset_name} is a registered benchmark, which has one source and known columns: leave "
                    f"{name} unset (it is for a Hub dataset or a local folder).",
                )
            require(
                self.data_dir is None or registered,
                "data_dir",
                self.data_dir,
                f"{self.dataset_name} is read from its own folder or Hub repo: leave data_dir unset.",
            )
            require(
                self.dataset_revision is None or not local,
                "dataset_revision",
                self.dataset_revision,
                f"{self.dataset_name} is a local folder, which has no revisions: leave dataset_revision unset.",
            )
        require_positive(self, "shots", allow_none=True)
        require(self.split_seed is None or self.split_seed >= 0, "split_seed", self.split_seed, "must be >= 0.")

    def data_split_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DATA_SPLIT_FIELDS}


DATA_SPLIT_FIELDS = tuple(f.name for f in dataclasses.fields(DataSplitSettings))


@dataclass
class StreamingSettings(SettingsGroup):
    """Whether the real training images are streamed from where they are kept (a Hub dataset or folder's Parquet
    shards, CASIA-WebFace's RecordIO) instead of built into a ``datasets`` cache first: the run starts at once and
    its memory does not grow with the set (:mod:`rlsyn_trl.data.streaming`). The split is the same either way."""

    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the training images (large sets: no build before the first step). False: build."},
    )
    shuffle_buffer: int = field(
        default=1000,
        metadata={"help": "Streamed images held to shuffle, beside the shard order (0: storage order)."},
    )

    def check(self) -> None:
        require(self.shuffle_buffer >= 0, "shuffle_buffer", self.shuffle_buffer, "must be >= 0 (0: no shuffling).")


@dataclass
class InputRecordSettings(SettingsGroup):
    """For stages that start from an adapter: whether one without a provenance record is accepted
    (:func:`rlsyn_trl.provenance.input_provenance` refuses it by default)."""

    allow_unrecorded_input: bool = field(
        default=False,
        metadata={
            "help": "Accept an adapter without provenance.json (hand-made or older): its split and reward settings "
            "then come from this run's flags and defaults, unchecked."
        },
    )


@dataclass
class RewardSettings(SettingsGroup):
    """The composite reward: tanh(w_sem z_sem + w_cov z_cov + w_exp z_exp) in the identity feature space.

    Each ``reward_<name>`` flag is field ``<name>`` of :class:`~rlsyn_trl.rewards.RewardOptions`, which holds the
    defaults and the checks; :meth:`reward_options` is the typed value the reward and provenance take.
    """

    reward_weights: list[float] = field(
        default_factory=lambda: list(DEFAULT_REWARD.weights),
        metadata={"help": "Weights of the z-scored terms (sem, cov, exp)."},
    )
    reward_alpha: float = field(default=DEFAULT_REWARD.alpha, metadata={"help": "Coverage's diversity weight."})
    reward_sigma: float | None = field(
        default=DEFAULT_REWARD.sigma, metadata={"help": "RBF kernel width; unset: median heuristic on the bank."}
    )
    reward_eps: float = field(default=DEFAULT_REWARD.eps, metadata={"help": "R_exp target: (1 + eps) S_ref(y)."})
    reward_tau: float | None = field(
        default=DEFAULT_REWARD.tau, metadata={"help": "R_exp scale; unset: S_ref(y) per identity."}
    )

    def check(self) -> None:
        try:
            self.reward_options()
        except RewardOptionError as error:
            raise SettingsError(f"--{REWARD_FIELDS[error.name]} {error.value!r}: {error.fix}") from None

    def reward_options(self) -> RewardOptions:
        """The reward these flags describe, checked (what :func:`~rlsyn_trl.rewards.composite_reward` takes)."""
        return RewardOptions(**{name: getattr(self, flag) for name, flag in REWARD_FIELDS.items()})


# Field of RewardOptions -> its flag: what provenance records under ``reward`` and the setting that must agree with it.
REWARD_FIELDS = {f.name: f"reward_{f.name}" for f in dataclasses.fields(RewardOptions)}


@dataclass
class LoraSettings(SettingsGroup):
    """LoRA on the DiT backbone; rank 0 keeps the backbone frozen (the paper's cold start)."""

    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the backbone; 0 keeps it off (paper)."})
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))

    def check(self) -> None:
        require(self.lora_rank >= 0, "lora_rank", self.lora_rank, "must be >= 0 (0 keeps the backbone frozen).")
        require(0 <= self.lora_dropout < 1, "lora_dropout", self.lora_dropout, "must be in [0, 1).")

    def lora_config(self) -> LoraConfig | None:
        """The peft config these fields describe, or None when the rank is 0."""
        if self.lora_rank <= 0:
            return None
        return LoraConfig(
            r=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_target_modules),
        )


@dataclass
class ReferenceSettings(SettingsGroup):
    """Reference-guided starts (SDEdit; DA-Fusion for few-shot augmentation): unset, every chain starts from noise.

    A strength s in (0, 1] starts at the step where a fraction s of the DDIM chain remains, from one of the
    identity's real training images noised to that step (chosen per sample by a seeded draw); a range draws s per
    sample uniformly. s = 1 is the pure-noise chain itself; a small s returns nearly the real photo.
    """

    reference_strength: str | None = field(
        default=None,
        metadata={
            "help": 'Start from a real training image noised to strength s in (0, 1], or a range "lo,hi" drawn per '
            "sample; unset: from pure noise."
        },
    )

    def check(self) -> None:
        strength = parse_reference_strength(self.reference_strength)
        if strength is not None:  # one canonical form for records and fingerprints: s, or [lo, hi]
            self.reference_strength = strength[0] if strength[0] == strength[1] else list(strength)

    def reference_range(self) -> tuple[float, float] | None:
        return parse_reference_strength(self.reference_strength)


@dataclass
class SamplerSettings(ReferenceSettings):
    """The guided DDIM sampler (eta 0: deterministic DDIM; eta > 0: stochastic, as DDPO's policy)."""

    num_inference_steps: int = field(default=50, metadata={"help": "DDIM steps per sample."})
    guidance_scale: float = field(default=2.0, metadata={"help": "Classifier-free guidance scale (1: none)."})
    guidance_interval: str | None = field(
        default=None,
        metadata={
            "help": 'Guide only at the noise levels t/T in "lo,hi" (0: clean, 1: noise), the conditional model alone '
            'elsewhere; e.g. "0.5,1": guidance in the noisier half only. Unset: at every step.'
        },
    )
    eta: float = field(default=0.0, metadata={"help": "DDIM eta: 0 deterministic, 1 DDPM-like noise."})

    def check(self) -> None:
        require_positive(self, "num_inference_steps")
        require(self.guidance_scale >= 0, "guidance_scale", self.guidance_scale, "must be >= 0.")
        require(0 <= self.eta <= 1, "eta", self.eta, "must be in [0, 1].")
        interval = parse_guidance_interval(self.guidance_interval)
        self.guidance_interval = None if interval is None else list(interval)  # one form for records

    def guidance_options(self) -> dict[str, Any]:
        """The sampler's guidance arguments (``DiTIdentityGenerator.sample``'s); ``check`` normalised the interval."""
        interval = None if self.guidance_interval is None else tuple(self.guidance_interval)
        return {"guidance_scale": self.guidance_scale, "guidance_interval": interval}

    def sampler_options(self) -> dict[str, Any]:
        """What decides the samples (and what provenance records); the reference strength only when set."""
        options = {
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
        }
        if self.guidance_interval is not None:
            options["guidance_interval"] = self.guidance_interval
        if self.reference_strength is not None:
            options["reference_strength"] = self.reference_strength
        return options


@dataclass
class EvaluatorSettings(SettingsGroup):
    """An identity feature extractor other than the reward's phi, to report identity consistency with.

    A policy is trained to please phi, so consistency measured with phi rewards the policy's own shortcuts; the
    evaluator's figure is reported next to phi's. A run refuses an evaluator that is phi (same folder or weights).
    """

    evaluator: str | None = field(
        default=None,
        metadata={
            "help": "Identity feature extractor the reward never saw (folder, Hub id or embedded id), e.g. "
            "embedded:orl_faces/evaluator; identity consistency is reported with it next to phi's. Unset: none."
        },
    )
    evaluator_revision: str | None = None


@dataclass
class HubSettings(SettingsGroup):
    """Publishing to the Hugging Face Hub: repositories are created private unless ``hub_private`` is false."""

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the result to the Hub after the run."})
    hub_private: bool = field(default=True, metadata={"help": "Hub repos are private unless set to false."})

    def check(self) -> None:
        repo_field = "hub_dataset_id" if hasattr(self, "hub_dataset_id") else "hub_model_id"
        repo = getattr(self, repo_field, None)
        require(
            not self.push_to_hub or bool(repo),
            repo_field,
            repo,
            f"--push_to_hub true needs the repo to push to: set --{repo_field} owner/name.",
        )


@dataclass
class ModelHubSettings(HubSettings):
    """Publishing a model (an identity adapter)."""

    hub_model_id: str | None = field(default=None, metadata={"help": "The Hub model repo (owner/name)."})


@dataclass
class DatasetHubSettings(HubSettings):
    """Publishing a synthetic dataset (refused above its memorisation limit unless forced)."""

    hub_dataset_id: str | None = field(default=None, metadata={"help": "The Hub dataset repo (owner/name)."})


@dataclass
class RuntimeSettings(SettingsGroup):
    """Seed and precision of a stage process."""

    seed: int = field(default=0, metadata={"help": "Seed of the run (batches, noise, sampling)."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 only where the device computes it natively, else fp32), no, bf16 or fp16.",
            "choices": list(PRECISIONS),
        },
    )

    def check(self) -> None:
        if self.mixed_precision is False:  # YAML reads a bare `no` as the boolean false
            self.mixed_precision = "no"
        require(
            self.mixed_precision in PRECISIONS, "mixed_precision", self.mixed_precision, f"must be one of {PRECISIONS}."
        )


@dataclass
class EncoderTrainingSettings(SettingsGroup):
    """The identity feature extractor phi (a CNN, ``rlsyn_trl.encoders.IdentityEncoder``) and its CosFace training."""

    encoder_widths: list[int] = field(
        default_factory=lambda: [32, 64, 128], metadata={"help": "Channels of the conv blocks, each halving the size."}
    )
    embedding_size: int = field(default=128, metadata={"help": "Width of the identity feature."})
    encoder_steps: int = field(default=1500, metadata={"help": "Training steps."})
    encoder_batch_size: int = field(
        default=64, metadata={"help": "Images per step over ALL processes (each trains on its share)."}
    )
    encoder_lr: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate (warm-up, then cosine)."})
    cosface_margin: float = field(default=0.25, metadata={"help": "CosFace additive cosine margin m."})
    cosface_scale: float = field(default=16.0, metadata={"help": "CosFace scale s."})

    def check(self) -> None:
        require_positive(self, "embedding_size", "encoder_steps", "encoder_batch_size", "encoder_lr", "cosface_scale")
        require(
            len(self.encoder_widths) > 0 and all(width > 0 for width in self.encoder_widths),
            "encoder_widths",
            self.encoder_widths,
            "must be one or more positive channel counts.",
        )
        require(self.cosface_margin >= 0, "cosface_margin", self.cosface_margin, "must be >= 0.")
