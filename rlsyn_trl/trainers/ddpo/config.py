"""The DDPO recipe's settings and the check that its identity groups fill whole sample batches.

Kept apart from the trainer so recipes, pipelines and tests can build and validate a config without importing the
trainer's training machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from trl import DDPOConfig

from ...generators.sampling import start_step
from ...settings import (
    DataSplitSettings,
    EvaluatorSettings,
    InputRecordSettings,
    LoraSettings,
    ModelHubSettings,
    ReferenceSettings,
    RewardSettings,
    check_settings,
    require,
    require_positive,
)
from ...utils.launch import PRECISIONS

MIN_GROUP_SIZE = 4


@dataclass
class RLSynDDPOConfig(
    DDPOConfig,
    DataSplitSettings,
    InputRecordSettings,
    RewardSettings,
    LoraSettings,
    ModelHubSettings,
    ReferenceSettings,
    EvaluatorSettings,
):
    """DDPO settings (TRL's fields) plus the identity groups, reward, LoRA and anchor; each is a YAML key.

    The data split fields are read from the cold-start adapter's provenance when left unset. With
    ``reference_strength`` the MDP is the truncated chain from each sample's start step: the policy samples, and
    trains, only the steps that remain (``train_timestep_fraction`` is a fraction of the shortest such chain).
    """

    adapter: str = field(
        default="outputs/orl_faces/sft",
        metadata={"help": "Cold-start adapter (folder or Hub id) the policy starts from; also the KL reference."},
    )
    adapter_revision: str | None = None
    encoder: str = field(
        default="embedded:orl_faces/encoder",
        metadata={
            "help": "Identity feature extractor phi: the project's encoder or a recognizer saved by train_recognizer "
            "(folder/Hub id), a transformers vision model with a pooled output (folder/Hub id), or an ArcFace .onnx "
            "file (rlsyn_trl.encoders.load_feature_extractor)."
        },
    )
    public_dataset_config: str | None = field(
        default="public",
        metadata={"help": "Public identities for the R_exp reference spread when no bank identity has 2 images."},
    )
    output_dir: str = "outputs/orl_faces/ddpo"
    identities_per_epoch: int = field(default=0, metadata={"help": "Identities drawn per epoch; 0 means all."})
    samples_per_identity: int = field(default=4, metadata={"help": "G, samples per identity group (>= 4)."})
    advantage_normalization: str = field(
        default="epoch",
        metadata={
            "help": "Scale of the per-identity advantages: 'epoch' (one std over all centred rewards) or "
            "'group' (each group's own std, noisy for small G).",
            "choices": ["epoch", "group"],
        },
    )
    lora_rank: int = field(default=8, metadata={"help": "Rank of LoRA injected when the adapter has none."})
    embedder_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the identity embedders; None: train_learning_rate."}
    )
    train_skip_final_steps: int = field(
        default=1,
        metadata={
            "help": "Final DDIM steps left out of training. Their noise is a few thousandths of the pixel range, so "
            "the reward hardly depends on it, while the score's 1/sigma_t made the last step's policy gradient "
            "30-800x the others' (pure noise that set Adam's step size and drowned the anchor)."
        },
    )
    kl_coef: float = field(default=0.0, metadata={"help": "Weight of the KL to the cold-start policy's steps."})
    denoise_coef: float = field(default=0.0, metadata={"help": "Weight of the denoising loss on real images."})
    denoise_batch_size: int = 16
    grid_identities: int = field(default=8, metadata={"help": "Identities (rows) in each epoch's sample grid."})
    eval_samples_per_identity: int = 4
    eval_seeds: list[int] = field(
        default_factory=list, metadata={"help": "Seeds of the final cold-start vs RL evaluation; empty: none."}
    )
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "Time budget of train(): no epoch starts that the last epoch's duration says would overrun."},
    )
    # TRL fields whose stock defaults do not fit a small DiT on a CPU.
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto (bf16 only where the device computes it natively), no, bf16, fp16."}
    )
    num_epochs: int = 10
    sample_num_steps: int = 10
    sample_guidance_scale: float = 2.0
    sample_batch_size: int = 16
    sample_num_batches_per_epoch: int = field(
        default=0,
        metadata={
            "help": "Derived: identities_per_epoch x samples_per_identity / (sample_batch_size x processes). "
            "Leave 0, or give the value that formula yields."
        },
    )
    train_batch_size: int = 8
    train_learning_rate: float = 1e-4
    train_timestep_fraction: float = 0.9  # all steps but the skipped final one (train_skip_final_steps)
    tracker_project_name: str = "rlsyn_ddpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_settings(self)
        if self.mixed_precision is False:  # YAML reads a bare `no` as the boolean false
            self.mixed_precision = "no"
        require(self.mixed_precision in PRECISIONS, "mixed_precision", self.mixed_precision, f"one of {PRECISIONS}.")
        require_positive(
            self,
            "num_epochs",
            "sample_num_steps",
            "sample_batch_size",
            "train_batch_size",
            "train_learning_rate",
            "train_gradient_accumulation_steps",
            "train_num_inner_epochs",
            "save_freq",
            "num_checkpoint_limit",
            "denoise_batch_size",
            "eval_samples_per_identity",
            "grid_identities",
        )
        require_positive(self, "max_minutes", "embedder_learning_rate", allow_none=True)
        require(
            0 < self.sample_eta <= 1, "sample_eta", self.sample_eta, "must be in (0, 1]: log-probs need noisy steps."
        )
        if self.samples_per_identity < MIN_GROUP_SIZE:
            raise ValueError(
                f"samples_per_identity is {self.samples_per_identity}; the set-level reward terms need groups of "
                f"G >= {MIN_GROUP_SIZE} samples per identity."
            )
        if self.identities_per_epoch < 0:
            raise ValueError(f"identities_per_epoch must be >= 0 (0 = all), got {self.identities_per_epoch}")
        if self.advantage_normalization not in ("epoch", "group"):
            raise ValueError(
                f"advantage_normalization must be 'epoch' or 'group', got {self.advantage_normalization!r}"
            )
        trained, trainable = self.trained_timesteps(), self.shortest_chain()
        if self.reference_strength is not None:
            require(
                trainable - self.train_skip_final_steps >= 1,
                "reference_strength",
                self.reference_strength,
                f"leaves {trainable} of the {self.sample_num_steps} DDIM steps to its lowest strength, none of them "
                f"trainable once train_skip_final_steps = {self.train_skip_final_steps} are left out; raise the "
                "strength or sample_num_steps.",
            )
        steps = "steps" if self.reference_strength is None else "steps of the shortest truncated chain"
        require(
            trained >= 1,
            "train_timestep_fraction",
            self.train_timestep_fraction,
            f"x {trainable} {steps} trains {trained} steps per sample; raise one of them.",
        )
        if not 0 <= self.train_skip_final_steps < trainable or trained > trainable - self.train_skip_final_steps:
            raise ValueError(
                f"train_timestep_fraction x {trainable} {steps} = {trained} steps are trained per sample, but only "
                f"{trainable - self.train_skip_final_steps} of the {trainable} steps remain once "
                f"train_skip_final_steps = {self.train_skip_final_steps} final steps are left out. Lower one of them."
            )
        if self.kl_coef < 0 or self.denoise_coef < 0:
            raise ValueError(f"kl_coef and denoise_coef must be >= 0, got {self.kl_coef} and {self.denoise_coef}")
        if self.per_prompt_stat_tracking:
            raise ValueError(
                "per_prompt_stat_tracking is the stock trainer's advantage rule; RLSynDDPOTrainer computes "
                "per-identity advantages over each epoch's groups itself. Set it to false."
            )
        if self.async_reward_computation:
            raise ValueError("The epoch-level reward runs once per epoch; async_reward_computation must be false.")

    def shortest_chain(self) -> int:
        """The fewest DDIM steps a sample runs: all of them from noise, else those left at the lowest strength."""
        strength = self.reference_range()
        if strength is None:
            return self.sample_num_steps
        return self.sample_num_steps - start_step(strength[0], self.sample_num_steps)

    def trained_timesteps(self) -> int:
        """Steps trained per sample (TRL's ``num_train_timesteps``), a fraction of the shortest chain."""
        return int(self.shortest_chain() * self.train_timestep_fraction)

    def resume_record(self) -> dict:
        """What a checkpoint of this run continues (``training.run_record``): every setting but step counts,
        budgets, logging, evaluation and publishing, and the starting adapter by its content, not its path."""
        from ...generators import resolve_pretrained_folder
        from ...provenance import folder_revision
        from ..training import run_record

        adapter = folder_revision(resolve_pretrained_folder(self.adapter, self.adapter_revision))
        return run_record(self, DDPO_RESUMABLE_SETTINGS | {"adapter"}, adapter_content=adapter)


# Settings a resumed DDPO run may change (TRL's logging fields included).
DDPO_RESUMABLE_SETTINGS = {
    "resume_from", "num_epochs", "max_minutes", "save_freq", "num_checkpoint_limit", "output_dir", "logdir",
    "log_with", "log_image_freq", "tracker_kwargs", "tracker_project_name", "project_kwargs", "accelerator_kwargs",
    "eval_seeds", "eval_samples_per_identity", "evaluator", "evaluator_revision", "grid_identities", "data_dir",
    "push_to_hub", "hub_model_id", "hub_private", "allow_unrecorded_input",
}  # fmt: skip


def epoch_layout(config: RLSynDDPOConfig, num_processes: int, num_identities: int) -> int:
    """Check that identity groups fill whole sample batches on every process; return the batches per process."""
    identities = config.identities_per_epoch or num_identities
    if identities > num_identities:
        raise ValueError(
            f"identities_per_epoch is {identities} but the generator knows only {num_identities} identities."
        )
    samples = identities * config.samples_per_identity
    per_round = config.sample_batch_size * num_processes
    if samples % per_round:
        raise ValueError(
            f"An epoch draws identities_per_epoch x samples_per_identity = {identities} x "
            f"{config.samples_per_identity} = {samples} samples, which is not a multiple of sample_batch_size x "
            f"processes = {config.sample_batch_size} x {num_processes} = {per_round}. Change sample_batch_size "
            "(a divisor of the epoch size over the processes) or the group counts."
        )
    batches = samples // per_round
    if config.sample_num_batches_per_epoch not in (0, batches):
        raise ValueError(
            f"sample_num_batches_per_epoch is {config.sample_num_batches_per_epoch} but {identities} identities x "
            f"{config.samples_per_identity} samples over {num_processes} process(es) at sample_batch_size "
            f"{config.sample_batch_size} take {batches} batches; leave it 0 to derive it."
        )
    return batches


def process_state(config: RLSynDDPOConfig) -> PartialState:
    """This process's place in the launch (index, count, device), known before any accelerator is built.

    It initialises the shared state the way AcceleratorState would: a bare PartialState ignores ACCELERATE_USE_CPU
    and would pin a CPU launch to one process.
    """
    cpu = bool(config.accelerator_kwargs.get("cpu")) or parse_flag_from_env("ACCELERATE_USE_CPU")
    return PartialState(cpu=cpu)
