"""Stage 2, reward-guided RL: TRL's ``DDPOTrainer`` subclassed for identity groups and the composite reward.

What changes against the stock trainer, and why (METHOD.md, stage 2 and the prototype lessons):

- Samples come in identity GROUPS (``identities_per_epoch`` x ``samples_per_identity``, G >= 4), because the
  coverage and expression terms are set-level; the composite reward is computed once over the WHOLE epoch,
  gathered across processes (the stock trainer scores each sample batch on its own), and advantages are
  per-identity (each sample against its own group's mean).
- Each sample's noise is seeded by (seed, epoch, sample index), so an epoch draws the same samples whatever the
  number of processes, and a resumed run redraws exactly what an uninterrupted one would.
- An optional anchor keeps the policy near the data: ``kl_coef`` penalises the KL between the policy's and the
  cold-start policy's DDIM step distributions, ``denoise_coef`` adds the cold-start denoising loss on the real
  training images. Self-training without an anchor collapsed in the prototype.
- Saving writes an identity-adapter folder (``IdentityGenerator.from_pretrained`` loads it) with a model card,
  pushing goes through :mod:`rlsyn_trl.hub` (private by default), sample grids are PNG files (no tracker needed),
  metrics always go to a JSONL tracker, and checkpoints resume exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import numbers
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.tracking import GeneralTracker
from accelerate.utils import parse_flag_from_env
from peft.tuners.lora import LoraLayer
from trl import DDPOConfig, DDPOTrainer

from ..cards import adapter_card
from ..data import dataset_to_tensors, load_identity_dataset
from ..data.preprocessing import to_model_range
from ..encoders import IdentityEncoder, load_encoder
from ..generators import IdentityGenerator
from ..settings import LoraSettings
from ..metrics.identity import identity_consistency
from ..realism import detect_faces
from ..rewards import MemoryBank, composite_reward, median_heuristic_sigma
from ..visualization import save_curves, save_image_grid
from .cold_start import ColdStartConfig
from .ddpo_pipeline import (
    IdentityDDPOPipeline,
    LabelConditionedDenoiser,
    guided_prediction,
    label_embeds,
    merged_lora,
)

logger = logging.getLogger(__name__)

MIN_GROUP_SIZE = 4
REWARD_TERMS = ("sem", "cov", "exp")
PER_TIMESTEP_KEYS = ("timesteps", "latents", "next_latents", "log_probs", "ref_log_probs")
TRAINER_STATE = "trainer_state.json"
MEMORY_BANK_FILE = "memory_bank.safetensors"


@dataclass
class RLSynDDPOConfig(DDPOConfig, LoraSettings):
    """DDPO settings (TRL's fields) plus the identity groups, reward, LoRA and anchor; each is a YAML key."""

    adapter: str = field(
        default="outputs/orl_faces/sft",
        metadata={"help": "Cold-start adapter (folder or Hub id) the policy starts from; also the KL reference."},
    )
    adapter_revision: str | None = None
    encoder: str = field(
        default="embedded:orl_faces/encoder", metadata={"help": "Identity feature extractor phi (folder/Hub id)."}
    )
    dataset_name: str = "orl_faces"
    dataset_config: str = "private"
    data_dir: str | None = None
    shots: int | None = field(
        default=2, metadata={"help": "Real training images per identity: the memory bank; None: all (ReID)."}
    )
    split_seed: int = 0
    public_dataset_config: str | None = field(
        default="public",
        metadata={"help": "Public identities for the R_exp reference spread when no bank identity has 2 images."},
    )
    output_dir: str = "outputs/orl_faces/ddpo"
    identities_per_epoch: int = field(default=0, metadata={"help": "Identities drawn per epoch; 0 means all."})
    samples_per_identity: int = field(default=4, metadata={"help": "G, samples per identity group (>= 4)."})
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 0.75, 0.25])
    reward_alpha: float = 0.5
    reward_sigma: float | None = field(default=None, metadata={"help": "RBF width; None: median heuristic."})
    reward_eps: float = 0.1
    reward_tau: float | None = field(default=None, metadata={"help": "R_exp scale; None: S_ref per identity."})
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
    hub_model_id: str | None = None
    hub_private: bool = field(default=True, metadata={"help": "Hub repos are private unless set to false."})
    # TRL fields whose stock defaults do not fit a small DiT on a CPU.
    mixed_precision: str = "no"
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
        if self.samples_per_identity < MIN_GROUP_SIZE:
            raise ValueError(
                f"samples_per_identity is {self.samples_per_identity}; the set-level reward terms need groups of "
                f"G >= {MIN_GROUP_SIZE} samples per identity."
            )
        if self.identities_per_epoch < 0:
            raise ValueError(f"identities_per_epoch must be >= 0 (0 = all), got {self.identities_per_epoch}")
        if len(self.reward_weights) != 3:
            raise ValueError(f"reward_weights must be three numbers (sem, cov, exp), got {self.reward_weights}")
        if self.advantage_normalization not in ("epoch", "group"):
            raise ValueError(
                f"advantage_normalization must be 'epoch' or 'group', got {self.advantage_normalization!r}"
            )
        trained, trainable = int(self.sample_num_steps * self.train_timestep_fraction), self.sample_num_steps
        if not 0 <= self.train_skip_final_steps < trainable or trained > trainable - self.train_skip_final_steps:
            raise ValueError(
                f"train_timestep_fraction x sample_num_steps = {trained} steps are trained per sample, but only "
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


def epoch_identities(seed: int, epoch: int, num_identities: int, count: int) -> torch.Tensor:
    """The identities of one epoch, a pure function of (seed, epoch): every process and a resumed run agree."""
    rng = np.random.default_rng([seed, epoch])
    return torch.from_numpy(np.sort(rng.choice(num_identities, size=count, replace=False))).long()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The noise seed of sample ``index`` of ``epoch``, independent of batch and process boundaries."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


def identity_advantages(rewards: torch.Tensor, labels: torch.Tensor, normalization: str = "epoch") -> torch.Tensor:
    """Each reward minus its identity group's mean, scaled by one std over the epoch or per group.

    Centring per identity compares a sample only with the samples of the same identity (identities differ in how
    easy they are). The default epoch-wide scale keeps a near-tied group of 4 from having its noise blown up to
    unit size, which a per-group std would do.
    """
    _, group = torch.unique(labels, return_inverse=True)
    count = torch.bincount(group).to(rewards.dtype)
    mean = torch.zeros_like(count).index_add_(0, group, rewards) / count
    centred = rewards - mean[group]
    if normalization == "group":
        scale = (torch.zeros_like(count).index_add_(0, group, centred**2) / count).sqrt()[group]
    elif normalization == "epoch":
        scale = centred.std(correction=0)
    else:
        raise ValueError(f"normalization must be 'epoch' or 'group', got {normalization!r}")
    return centred / (scale + 1e-8)


def identity_prompt_fn(label_names: Sequence[str], group_size: int, seed: int = 0) -> Callable[[], tuple[str, dict]]:
    """A stock DDPO prompt function: random identities, each repeated ``group_size`` times in a row.

    The stock trainer scores each sample batch on its own, so a batch must hold whole groups for the set-level
    terms; with ``sample_batch_size`` a multiple of ``group_size`` it does.
    """
    rng = np.random.default_rng(seed)
    state = {"label": 0, "left": 0}

    def prompt() -> tuple[str, dict]:
        if state["left"] == 0:
            state["label"], state["left"] = int(rng.integers(len(label_names))), group_size
        state["left"] -= 1
        return label_names[state["label"]], {"label": state["label"]}

    return prompt


@torch.no_grad()
def encode_images(encoder: IdentityEncoder, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised features of images in ``[-1, 1]``, resized to the encoder's input size when they differ.

    Images arrive in the sampler's dtype (bf16 under mixed precision); the encoder and the resize run in float32.
    """
    size = encoder.config.image_size
    images = images.float()
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return encoder.encode_batched(images)


class IdentityReward:
    """Images -> identity features phi -> composite reward against the memory bank of real training images.

    A stock DDPO reward function when called (one batch at a time), and split into :meth:`features` and
    :meth:`score` so :class:`RLSynDDPOTrainer` encodes each process's samples locally and scores the gathered
    epoch once. Images the encoder was not trained at the size of are resized to its input size.
    """

    def __init__(
        self,
        encoder: IdentityEncoder,
        bank: MemoryBank,
        *,
        weights: Sequence[float] = (1.0, 0.75, 0.25),
        alpha: float = 0.5,
        sigma: float | None = None,
        eps: float = 0.1,
        tau: float | None = None,
    ):
        self.encoder = encoder.eval().requires_grad_(False)
        self.bank = bank
        self.options = {"weights": tuple(weights), "alpha": alpha, "sigma": sigma, "eps": eps, "tau": tau}

    @classmethod
    def build(
        cls,
        encoder: IdentityEncoder,
        images: torch.Tensor,
        labels: torch.Tensor,
        label_names: Sequence[str],
        public: tuple[torch.Tensor, torch.Tensor] | None = None,
        **options,
    ) -> IdentityReward:
        """Encode the real training images (``[-1, 1]``) into the bank; ``public`` adds the 1-shot fallback spread."""
        encoder = encoder.eval().requires_grad_(False)
        public_images, public_labels = public if public is not None else (None, None)
        bank = MemoryBank.build(
            images, labels, partial(encode_images, encoder), label_names, public_images, public_labels
        )
        return cls(encoder, bank, **options)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features of images in ``[-1, 1]`` at any size."""
        return encode_images(self.encoder, images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of images in ``[0, 1]`` (what DDPO pipelines return)."""
        return self.encode(to_model_range(images))

    def score(self, features: torch.Tensor, labels: torch.Tensor, copies: int = 1) -> dict:
        """:func:`composite_reward` against the bank. ``copies`` > 1 scores that many sample sets side by side.

        For several sets (e.g. two policies' samples), set ``c``'s identity ``y`` is label ``c * K + y`` and each
        set meets its own copy of the bank, with sigma from the single bank: every term is what it would be for
        the set alone, while the z-scores, hence the totals, are shared and so comparable across sets.
        """
        if copies == 1:
            return self.bank.reward(features, labels, **self.options)
        options = dict(self.options)
        if options["sigma"] is None:
            options["sigma"] = median_heuristic_sigma(self.bank.features.double()).item()
        num = len(self.bank.label_names)
        return composite_reward(
            features,
            labels,
            self.bank.features.repeat(copies, 1),
            torch.cat([self.bank.labels + copy * num for copy in range(copies)]),
            fallback_spread=self.bank.public_spread,
            **options,
        )

    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict]) -> tuple:
        """TRL's reward-function signature: one sample batch in ``[0, 1]`` -> (total reward, per-term details)."""
        labels = torch.tensor([item["label"] for item in metadata], dtype=torch.long)
        result = self.score(self.features(images), labels)
        return result["total"], result


class JsonlTracker(GeneralTracker):
    """An accelerate tracker that appends each ``log`` call to a JSONL file: metrics without any tracker installed."""

    name = "jsonl"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.path.with_name("config.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        scalars = {
            key: float(value)
            for key, value in values.items()
            if isinstance(value, numbers.Real) or (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0)
        }
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **scalars}) + "\n")


class SampleGridWriter:
    """DDPO image hook that needs no tracker: each epoch's local samples as a PNG grid, one identity group per row."""

    def __init__(self, folder: str | os.PathLike, per_row: int, max_rows: int):
        self.folder = Path(folder)
        self.per_row = per_row
        self.max_rows = max_rows

    def __call__(self, prompt_image_data: list, global_step: int, tracker) -> Path:
        images = torch.cat([entry[0] for entry in prompt_image_data])[: self.per_row * self.max_rows]
        return save_image_grid(
            to_model_range(images.float().cpu()), self.folder / f"step-{global_step:06d}.png", self.per_row
        )


def real_training_images(
    config: RLSynDDPOConfig, resolution: int, channels: int, split_config: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The train split (images in ``[-1, 1]`` at the generator's size, labels, label names)."""
    options = {"shots": config.shots, "seed": config.split_seed} if split_config is None else {}
    data = load_identity_dataset(
        config.dataset_name, split_config or config.dataset_config, data_dir=config.data_dir, **options
    )["train"]
    images, labels = dataset_to_tensors(data, resolution, channels)
    return images, labels, list(data.features["label"].names)


def build_identity_reward(
    config: RLSynDDPOConfig, images: torch.Tensor, labels: torch.Tensor, label_names: Sequence[str]
) -> IdentityReward:
    """The reward of ``config``: its encoder, a bank of the real training images, its constants."""
    encoder = load_encoder(config.encoder)
    public = None
    if torch.bincount(labels).max() < 2:  # no bank identity has two images: R_exp needs the public spread
        if config.public_dataset_config is None:
            raise ValueError(
                "Every identity has a single real image, so the R_exp reference spread must come from public "
                "identities; set public_dataset_config (e.g. 'public' for orl_faces)."
            )
        public_images, public_labels, _ = real_training_images(
            config, images.shape[-1], images.shape[1], config.public_dataset_config
        )
        public = (public_images, public_labels)
    return IdentityReward.build(
        encoder,
        images,
        labels,
        label_names,
        public,
        weights=tuple(config.reward_weights),
        alpha=config.reward_alpha,
        sigma=config.reward_sigma,
        eps=config.reward_eps,
        tau=config.reward_tau,
    )


def reward_summary(result: Mapping) -> dict[str, float]:
    """One epoch's reward log: each term's raw mean and std, its z-score's mean and std (std 0: the term was constant
    and dropped out of the total), the total, group-level E(G_y), sigma and how each S_ref was chosen."""
    record = {}
    for term in (*REWARD_TERMS, "total"):
        record[f"reward/{term}_mean"] = result[term].float().mean().item()
        record[f"reward/{term}_std"] = result[term].float().std(correction=0).item()
    for term in REWARD_TERMS:
        record[f"reward/z_{term}_mean"] = result[f"z_{term}"].float().mean().item()
        record[f"reward/z_{term}_std"] = result[f"z_{term}"].float().std(correction=0).item()
    record["reward/group_exp_mean"] = result["group_exp"].float().mean().item()
    record["reward/group_spread_mean"] = result["group_spread"].float().mean().item()
    record["reward/sigma"] = float(result["sigma"])
    for source in sorted(set(result["s_ref_source"])):
        record[f"reward/s_ref_{source}"] = float(result["s_ref_source"].count(source))
    return record


def latest_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself if it is a checkpoint, else its newest ``epoch-N`` checkpoint (also under ``checkpoints/``)."""
    path = Path(path)
    if (path / TRAINER_STATE).is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = sorted(folder.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
    found = [p for p in found if (p / TRAINER_STATE).is_file()]
    if not found:
        raise FileNotFoundError(f"No DDPO checkpoint (epoch-N/{TRAINER_STATE}) in {path}")
    return found[-1]


class RLSynDDPOTrainer(DDPOTrainer):
    """DDPO on identity groups with the epoch-level composite identity reward (see the module docstring).

    Built from ``config`` alone; ``pipeline``, ``reward`` and ``train_data`` (real images in ``[-1, 1]`` and
    labels, for the denoising anchor) can be passed instead, e.g. tiny models in tests.
    """

    _tag_names = ["trl", "ddpo", "rlsyn-trl"]

    def __init__(
        self,
        config: RLSynDDPOConfig,
        pipeline: IdentityDDPOPipeline | None = None,
        reward: IdentityReward | None = None,
        train_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        image_samples_hook: Callable | None = None,
    ):
        torch.set_flush_denormal(True)
        # The process count is needed before the stock __init__ builds the Accelerator; initialise the shared state
        # the way AcceleratorState would (a bare PartialState ignores ACCELERATE_USE_CPU and would pin 1 process).
        cpu = bool(config.accelerator_kwargs.get("cpu")) or parse_flag_from_env("ACCELERATE_USE_CPU")
        state = PartialState(cpu=cpu)
        pipeline = pipeline or IdentityDDPOPipeline.from_pretrained(
            config.adapter, config.adapter_revision, config.lora_config()
        )
        generator = pipeline.generator
        batches = epoch_layout(config, state.num_processes, generator.num_classes)
        if train_data is None or reward is None:
            channels = 3 if generator.vae is not None else generator.transformer.config.in_channels
            images, labels, names = real_training_images(config, generator.resolution, channels)
            if names != generator.label_names:
                raise ValueError(
                    f"The adapter's identities {generator.label_names[:5]}... differ from the dataset's "
                    f"{names[:5]}...: DDPO must start from a cold-start adapter of the same identities and split."
                )
            train_data = train_data or (images, labels)
            reward = reward or build_identity_reward(config, images, labels, names)
        self.reward = reward
        self.train_images, self.train_labels = train_data
        output = Path(config.output_dir)
        trackers = [JsonlTracker(output / "logs" / "metrics.jsonl"), *([config.log_with] if config.log_with else [])]
        hook = image_samples_hook or SampleGridWriter(
            output / "samples", config.samples_per_identity, config.grid_identities
        )
        # The stock resume assumes its own checkpoint naming and restarts at global step 0: it is done here instead.
        stock_config = dataclasses.replace(
            config, resume_from="", sample_num_batches_per_epoch=batches, log_with=trackers
        )
        super().__init__(
            stock_config,
            self.reward,
            identity_prompt_fn(generator.label_names, config.samples_per_identity, config.seed),
            pipeline,
            hook,
        )
        # The stock trainer calls the raw module; the prepared one (DDP across processes) keeps gradients in sync.
        self.sd_pipeline.unet = self.trainable_layers
        device = self.accelerator.device
        self.reward.encoder.to(device)
        self.train_images, self.train_labels = self.train_images.to(device), self.train_labels.to(device)
        self.reference = self._reference_policy() if config.kl_coef > 0 else None
        self.first_epoch, self.global_step, self.history = 0, 0, []
        self._train_stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        if self.accelerator.is_main_process:
            self.reward.bank.save(output / MEMORY_BANK_FILE)
        if config.resume_from:
            self._resume(config.resume_from)

    # -- set-up -----------------------------------------------------------------------------------------------
    def _reference_policy(self) -> LabelConditionedDenoiser:
        """A frozen copy of the starting (cold-start) policy for the KL anchor, called like the trained denoiser."""
        reference = copy.copy(self.sd_pipeline.generator)
        reference.transformer = copy.deepcopy(reference.transformer).requires_grad_(False).eval()
        for layer in reference.transformer.modules():
            if isinstance(layer, LoraLayer):
                layer.merge()  # frozen for good: one matmul per layer instead of three
        return LabelConditionedDenoiser(reference)

    def _setup_optimizer(self, trainable_layers_parameters):
        """The stock optimizer over two groups: LoRA at ``train_learning_rate``, embedders at their own rate."""
        named = [(n, p) for n, p in self.sd_pipeline.unet.named_parameters() if p.requires_grad]
        embedders = [p for n, p in named if "class_embedder" in n]
        others = [p for n, p in named if "class_embedder" not in n]
        groups = [{"params": others}] if others else []
        if embedders:
            groups.append(
                {"params": embedders, "lr": self.config.embedder_learning_rate or self.config.train_learning_rate}
            )
        return super()._setup_optimizer(groups)

    # -- one epoch --------------------------------------------------------------------------------------------
    @property
    def identities_per_epoch(self) -> int:
        return self.config.identities_per_epoch or self.sd_pipeline.generator.num_classes

    def epoch_labels(self, epoch: int) -> torch.Tensor:
        """All processes' labels of ``epoch`` in gather order: identity groups of ``samples_per_identity``."""
        identities = epoch_identities(
            self.config.seed, epoch, self.sd_pipeline.generator.num_classes, self.identities_per_epoch
        )
        return identities.repeat_interleave(self.config.samples_per_identity)

    def _local_range(self) -> range:
        per_process = self.config.sample_batch_size * self.config.sample_num_batches_per_epoch
        start = self.accelerator.process_index * per_process
        return range(start, start + per_process)

    @torch.no_grad()
    def _sample_epoch(self, epoch: int, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """This process's share of the epoch: trajectories (TRL's sample keys) and images in ``[0, 1]``."""
        device = self.accelerator.device
        pipeline = self.sd_pipeline
        pipeline.unet.eval()
        batches, images = [], []
        local = self._local_range()
        for start in range(local.start, local.stop, self.config.sample_batch_size):
            indices = range(start, start + self.config.sample_batch_size)
            embeds = label_embeds(labels[start : indices.stop]).to(device)
            negative = label_embeds(torch.full((len(indices),), pipeline.generator.null_label)).to(device)
            generators = [torch.Generator(device).manual_seed(sample_seed(self.config.seed, epoch, i)) for i in indices]
            with self.autocast():
                output = pipeline(
                    prompt_embeds=embeds,
                    negative_prompt_embeds=negative,
                    num_inference_steps=self.config.sample_num_steps,
                    guidance_scale=self.config.sample_guidance_scale,
                    eta=self.config.sample_eta,
                    generator=generators,
                )
            chain = torch.stack(output.latents, dim=1)
            batch = {
                "prompt_embeds": embeds,
                "negative_prompt_embeds": negative,
                "timesteps": pipeline.scheduler.timesteps.repeat(len(indices), 1),
                "latents": chain[:, :-1],
                "next_latents": chain[:, 1:],
                "log_probs": torch.stack(output.log_probs, dim=1),
            }
            if self.reference is not None:
                batch["ref_log_probs"] = self._reference_log_probs(batch)
            batches.append(batch)
            images.append(output.images)
        return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}, torch.cat(images)

    def _reference_log_probs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p_ref of every sampled step under the cold-start policy, ``[B, T]``, all steps in one pass."""
        size, steps = batch["timesteps"].shape

        def flat(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.flatten(0, 1)

        def per_step(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.repeat_interleave(steps, dim=0)

        latents, timesteps = flat(batch["latents"]), flat(batch["timesteps"])
        with self.autocast():
            output = guided_prediction(
                self.reference,
                latents,
                timesteps,
                per_step(batch["prompt_embeds"]),
                per_step(batch["negative_prompt_embeds"]),
                self.config.sample_guidance_scale,
                cfg=self.config.train_cfg,
            )
            step = self.sd_pipeline.scheduler_step(
                output, timesteps, latents, eta=self.config.sample_eta, prev_sample=flat(batch["next_latents"])
            )
        return step.log_probs.view(size, steps)

    def _score_epoch(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Encode locally, gather features and labels of all processes, score the whole epoch once (every rank)."""
        features = self.accelerator.gather(self.reward.features(images))
        gathered = self.accelerator.gather(labels.to(features.device))
        result = self.reward.score(features, gathered)
        result["labels"] = gathered
        return result

    def step(self, epoch: int, global_step: int) -> int:
        """Sample the epoch's identity groups, score them together, train on per-identity advantages."""
        started = time.perf_counter()
        labels = self.epoch_labels(epoch)
        local = self._local_range()
        samples, images = self._sample_epoch(epoch, labels)
        sampled = time.perf_counter()
        result = self._score_epoch(images, labels[local.start : local.stop])
        advantages = identity_advantages(result["total"].float(), result["labels"], self.config.advantage_normalization)
        samples["advantages"] = advantages[local.start : local.stop].to(self.accelerator.device)
        scored = time.perf_counter()
        if self.image_samples_callback is not None and self.accelerator.is_main_process:
            names = self.sd_pipeline.tokenizer.batch_decode(samples["prompt_embeds"])
            metadata = [{"label": int(label)} for label in labels[local.start : local.stop]]
            tracker = self.accelerator.trackers[0] if self.accelerator.trackers else None
            entry = [images, names, metadata, result["total"][local.start : local.stop], result]
            self.image_samples_callback([entry], global_step, tracker)
        global_step = self._train_epoch(samples, epoch, global_step)
        trained = time.perf_counter()
        record = {
            "epoch": epoch,
            **reward_summary(result),
            **self._reduce_train_stats(),
            "time/sample_s": sampled - started,
            "time/reward_s": scored - sampled,
            "time/train_s": trained - scored,
            "time/epoch_s": trained - started,
        }
        self.history.append(record)
        self.accelerator.log(record, step=global_step)
        done = epoch + 1
        if done % self.config.save_freq == 0 or done == self.config.num_epochs:
            self.save_checkpoint(done, global_step)
        return global_step

    def _train_epoch(self, samples: dict[str, torch.Tensor], epoch: int, global_step: int) -> int:
        """The stock inner loop: shuffle samples and each sample's timesteps (but the skipped final ones), train."""
        device = self.accelerator.device
        total, num_timesteps = samples["timesteps"].shape
        num_timesteps -= self.config.train_skip_final_steps
        for inner_epoch in range(self.config.train_num_inner_epochs):
            perm = torch.randperm(total, device=device)
            samples = {key: value[perm] for key, value in samples.items()}
            perms = torch.stack([torch.randperm(num_timesteps, device=device) for _ in range(total)])
            rows = torch.arange(total, device=device)[:, None]
            for key in PER_TIMESTEP_KEYS:
                if key in samples:
                    samples[key] = samples[key][rows, perms]
            size = self.config.train_batch_size
            batched = [{key: value[i : i + size] for key, value in samples.items()} for i in range(0, total, size)]
            self.sd_pipeline.unet.train()
            global_step = self._train_batched_samples(inner_epoch, epoch, global_step, batched)
            if not self.accelerator.sync_gradients:
                raise RuntimeError("An epoch ended inside a gradient accumulation window; check the batch sizes.")
        return global_step

    def _train_batched_samples(self, inner_epoch: int, epoch: int, global_step: int, batched_samples: list) -> int:
        """PPO-clipped updates over (sample batch, timestep) pairs, plus the anchors; statistics kept per epoch."""
        unet = self.sd_pipeline.unet
        for sample in batched_samples:
            for j in range(self.num_train_timesteps):
                with self.accelerator.accumulate(unet):
                    terms = self._loss_terms(sample, j)
                    self.accelerator.backward(terms["loss"])
                    if self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_(
                            self.trainable_layers.parameters(), self.config.train_max_grad_norm
                        )
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                for name, value in terms.items():
                    self._train_stats[name].append(value.detach())
                if self.accelerator.sync_gradients:
                    global_step += 1
        return global_step

    def _loss_terms(self, sample: dict[str, torch.Tensor], j: int) -> dict[str, torch.Tensor]:
        """The stock PPO loss for timestep column ``j``, plus the KL and denoising anchors when weighted."""
        latents, timesteps = sample["latents"][:, j], sample["timesteps"][:, j]
        with self.autocast():
            output = guided_prediction(
                self.sd_pipeline.unet,
                latents,
                timesteps,
                sample["prompt_embeds"],
                sample["negative_prompt_embeds"],
                self.config.sample_guidance_scale,
                cfg=self.config.train_cfg,
            )
            log_prob = self.sd_pipeline.scheduler_step(
                output, timesteps, latents, eta=self.config.sample_eta, prev_sample=sample["next_latents"][:, j]
            ).log_probs
        advantages = sample["advantages"].clamp(-self.config.train_adv_clip_max, self.config.train_adv_clip_max)
        ratio = torch.exp(log_prob - sample["log_probs"][:, j])
        policy_loss = self.loss(advantages, self.config.train_clip_range, ratio)
        terms = {
            "policy_loss": policy_loss,
            "approx_kl": 0.5 * torch.mean((log_prob - sample["log_probs"][:, j]) ** 2),
            "clipfrac": torch.mean((torch.abs(ratio - 1.0) > self.config.train_clip_range).float()),
        }
        loss = policy_loss
        if self.reference is not None:
            # k2 estimator of KL(policy || reference) per latent dimension: TRL's log-probs are per-dimension means,
            # so the full log-ratio is D times their difference and k2 / D = D / 2 * difference^2.
            dims = latents[0].numel()
            terms["kl_ref"] = 0.5 * dims * torch.mean((log_prob - sample["ref_log_probs"][:, j]) ** 2)
            loss = loss + self.config.kl_coef * terms["kl_ref"]
        if self.config.denoise_coef > 0 and self.accelerator.sync_gradients:
            # Once per optimizer step, scaled by the accumulation count that accelerate divides every loss by.
            terms["denoise_loss"] = self._denoising_loss()
            scale = self.accelerator.gradient_accumulation_steps
            loss = loss + self.config.denoise_coef * scale * terms["denoise_loss"]
        terms["loss"] = loss
        return terms

    def _denoising_loss(self) -> torch.Tensor:
        """The cold-start objective on a random batch of the real training images."""
        index = torch.randint(
            len(self.train_images), (self.config.denoise_batch_size,), device=self.train_images.device
        )
        with self.autocast():
            return self.sd_pipeline.generator.denoising_loss(
                self.train_images[index],
                self.train_labels[index],
                ColdStartConfig.p_uncond,
                ColdStartConfig.min_snr_gamma,
            )

    def _reduce_train_stats(self) -> dict[str, float]:
        stats = {name: torch.stack(values).mean() for name, values in self._train_stats.items()}
        self._train_stats.clear()
        return {f"train/{name}": value.item() for name, value in self.accelerator.reduce(stats, "mean").items()}

    # -- running, checkpoints, resume -------------------------------------------------------------------------
    def train(self, epochs: int | None = None) -> list[dict]:
        """Train up to ``epochs`` (default ``num_epochs``) from where the trainer stands; returns the per-epoch log."""
        epochs = self.config.num_epochs if epochs is None else epochs
        budget = None if self.config.max_minutes is None else self.config.max_minutes * 60
        started = time.perf_counter()
        for epoch in range(self.first_epoch, epochs):
            epoch_started = time.perf_counter()
            self.global_step = self.step(epoch, self.global_step)
            self.first_epoch = epoch + 1
            now = time.perf_counter()
            overrun = budget is not None and now - started + (now - epoch_started) > budget
            # Every process must take the same decision, or one would wait for the others forever.
            overrun = bool(self.accelerator.gather(torch.tensor([overrun], device=self.accelerator.device)).any())
            if overrun and epoch + 1 < epochs:
                logger.info("Stopping after epoch %d: another epoch would exceed %s minutes", epoch + 1, budget / 60)
                if (epoch + 1) % self.config.save_freq:
                    self.save_checkpoint(epoch + 1, self.global_step)
                break
        if self.accelerator.is_main_process and self.history:
            self.write_reward_curves()
        return self.history

    def write_reward_curves(self) -> Path:
        """The raw reward terms per epoch (the z-scored total is centred within each epoch, so it is not plotted)."""
        curves = {
            "R_sem": [record["reward/sem_mean"] for record in self.history],
            "R_cov": [record["reward/cov_mean"] for record in self.history],
            "R_exp (LOO share)": [record["reward/exp_mean"] for record in self.history],
            "E(G_y)": [record["reward/group_exp_mean"] for record in self.history],
        }
        return save_curves(curves, Path(self.config.output_dir) / "reward_curves.png", "Reward terms", "epoch")

    def save_checkpoint(self, epochs_done: int, global_step: int) -> Path:
        """Trainable tensors, optimizer, RNG states and the epoch log under ``checkpoints/epoch-N``."""
        root = Path(self.config.output_dir) / "checkpoints"
        folder = root / f"epoch-{epochs_done}"
        self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            state = {"epoch": epochs_done, "global_step": global_step, "history": self.history}
            (folder / TRAINER_STATE).write_text(json.dumps(state, indent=2))
            checkpoints = sorted(root.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
            for old in checkpoints[: -self.config.num_checkpoint_limit]:
                shutil.rmtree(old, ignore_errors=True)
            self.write_reward_curves()
        self.accelerator.wait_for_everyone()
        return folder

    def _resume(self, path: str | os.PathLike) -> None:
        folder = latest_checkpoint(path)
        self.accelerator.load_state(str(folder))
        state = json.loads((folder / TRAINER_STATE).read_text())
        self.first_epoch, self.global_step, self.history = state["epoch"], state["global_step"], state["history"]
        logger.info("Resumed DDPO from %s (epoch %d)", folder, self.first_epoch)

    # -- saving and publishing --------------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """The identity-adapter folder with its model card (the stock one writes a Stable Diffusion pipeline)."""
        last = self.history[-1] if self.history else {}
        extra = {
            "stage": "ddpo",
            "cold_start_adapter": self.config.adapter,
            "epochs": self.first_epoch,
            "shots": self.config.shots,
            "split_seed": self.config.split_seed,
            "reward": {**self.reward.options, "weights": list(self.reward.options["weights"])},
            "final_reward_terms": {k: v for k, v in last.items() if k.startswith("reward/")},
        }
        self.sd_pipeline.save_pretrained(save_directory, card=self.model_card(), extra=extra)

    def save_pretrained(self, save_directory: str | os.PathLike | None = None) -> Path:
        """Write the trained adapter (default: ``output_dir``); load it with ``IdentityGenerator.from_pretrained``."""
        directory = Path(save_directory or self.config.output_dir)
        if self.accelerator.is_main_process:
            self._save_pretrained(directory)
        self.accelerator.wait_for_everyone()
        return directory

    def push_to_hub(self, repo_id: str | None = None, *, private: bool | None = None, api=None) -> str | None:
        """Save, then upload the adapter folder; the repo is private unless ``private=False``/``hub_private``."""
        repo_id = repo_id or self.config.hub_model_id
        if not repo_id:
            raise ValueError("Pushing needs a repo id: pass repo_id or set hub_model_id (owner/name).")
        from ..hub import push_adapter

        folder = self.save_pretrained()
        url = None
        if self.accelerator.is_main_process:
            url = push_adapter(
                folder, repo_id, private=self.config.hub_private if private is None else private, api=api
            )
        self.accelerator.wait_for_everyone()
        return url

    def model_card(self) -> str:
        """The identity-adapter card (``model_cards/identity_adapter.md``) filled in for a DDPO stage."""
        config = self.config
        generator = self.sd_pipeline.generator
        weights = ", ".join(f"{w:g}" for w in config.reward_weights)
        anchors = (
            f"KL to the cold-start policy x {config.kl_coef:g}, "
            f"denoising loss on the real images x {config.denoise_coef:g}"
        )
        extra = (
            "## Reward-guided RL\n\n"
            f"Started from the cold-start adapter `{config.adapter}` and trained with DDPO (TRL's `DDPOTrainer`, "
            f"PPO clip range {config.train_clip_range:g}) on groups of {config.samples_per_identity} samples for "
            f"{self.identities_per_epoch} identities per epoch, {config.sample_num_steps} DDIM steps (eta "
            f"{config.sample_eta:g}, guidance {config.sample_guidance_scale:g}). Reward: tanh of z-scored semantic "
            f"consistency, coverage and expression richness with weights ({weights}), computed over each whole "
            f"epoch against a memory bank of the real training images. Anchors: {anchors}.\n\n"
            "Judge this adapter by realism (e.g. the face-detection rate) and downstream accuracy, not by its reward."
        )
        return adapter_card(
            config,
            generator,
            self.sd_pipeline.lora_config,
            self.sd_pipeline.base_model,
            "reward-guided RL (DDPO)",
            tags=["ddpo", "trl"],
            steps=f"{self.first_epoch} DDPO epochs",
            batch_size=config.train_batch_size,
            learning_rate=config.train_learning_rate,
            extra=extra,
        )


EVALUATION_COLUMNS = {
    "sem": "R_sem",
    "cov": "R_cov",
    "exp": "R_exp (LOO)",
    "group_exp": "E(G_y)",
    "total": "total (joint z)",
    "consistency": "identity consistency",
    "face_rate": "face-detection rate",
}


@torch.no_grad()
def evaluate_policies(
    policies: Mapping[str, IdentityGenerator],
    reward: IdentityReward,
    seeds: Sequence[int],
    samples_per_identity: int,
    num_inference_steps: int,
    guidance_scale: float,
    eta: float,
) -> dict[str, dict[str, float]]:
    """Fresh samples of every identity from each policy with the same seeds, scored side by side.

    Per policy and seed: the mean of R_sem, R_cov, R_exp (leave-one-out share) and of the group-level E(G_y), the
    total with z-scores shared by all policies' samples (a per-policy z-score would centre every total at 0),
    identity consistency and the face-detection rate (realism); returned as the mean and std over seeds.
    """
    names = list(policies)
    num_identities = len(reward.bank.label_names)
    per_seed: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in names}
    for seed in seeds:
        features, labels = [], []
        for index, name in enumerate(names):
            identities = torch.arange(num_identities).repeat_interleave(samples_per_identity)
            with merged_lora(policies[name].transformer):
                images = policies[name].sample(
                    identities,
                    seed=seed,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    eta=eta,
                )
            feature = reward.encode(images).cpu()
            features.append(feature)
            labels.append(identities + index * num_identities)
            per_seed[name]["face_rate"].append(detect_faces(images).float().mean().item())
            per_seed[name]["consistency"].append(
                identity_consistency(feature, identities, reward.bank.features, reward.bank.labels)
            )
        result = reward.score(torch.cat(features), torch.cat(labels), copies=len(names))
        sample_policy = torch.cat(labels) // num_identities
        group_policy = result["identities"] // num_identities
        for index, name in enumerate(names):
            for term in (*REWARD_TERMS, "total"):
                per_seed[name][term].append(result[term][sample_policy == index].mean().item())
            per_seed[name]["group_exp"].append(result["group_exp"][group_policy == index].mean().item())
    return {
        name: {
            key: value
            for metric, values in metrics.items()
            for key, value in ((metric, float(np.mean(values))), (f"{metric}_std", float(np.std(values))))
        }
        for name, metrics in per_seed.items()
    }


def evaluation_table(evaluation: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of :func:`evaluate_policies` (mean +- std over seeds), one row per policy."""
    header = "| policy | " + " | ".join(EVALUATION_COLUMNS.values()) + " |"
    rule = "|---|" + "---:|" * len(EVALUATION_COLUMNS)
    rows = [
        f"| {name} | "
        + " | ".join(f"{metrics[key]:.4f} +- {metrics[key + '_std']:.4f}" for key in EVALUATION_COLUMNS)
        + " |"
        for name, metrics in evaluation.items()
    ]
    return "\n".join([header, rule, *rows])


def train_ddpo(config: RLSynDDPOConfig) -> dict:
    """The DDPO recipe: train, save the adapter, compare cold start with RL on fresh samples, push if asked."""
    trainer = RLSynDDPOTrainer(config)
    history = trainer.train()
    folder = trainer.save_pretrained()
    summary = {"epochs": trainer.first_epoch, "adapter": str(folder), "last_epoch": history[-1] if history else {}}
    if config.eval_seeds and trainer.accelerator.is_main_process:
        cold_start = IdentityGenerator.from_pretrained(config.adapter, config.adapter_revision)
        evaluation = evaluate_policies(
            {"cold start": cold_start.to(trainer.accelerator.device), "DDPO": trainer.sd_pipeline.generator},
            trainer.reward,
            config.eval_seeds,
            config.eval_samples_per_identity,
            config.sample_num_steps,
            config.sample_guidance_scale,
            config.sample_eta,
        )
        summary["evaluation"] = evaluation
        (folder / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
        (folder / "evaluation.md").write_text(evaluation_table(evaluation) + "\n")
    trainer.accelerator.wait_for_everyone()
    if config.push_to_hub:
        summary["hub_url"] = trainer.push_to_hub()
    trainer.accelerator.end_training()
    return summary
