"""Stage 1, cold start: fit fresh zero-initialised identity embedders (+ optional LoRA) on the few real images.

The base DiT stays frozen; only the new class embedders of every block (and LoRA weights when configured) learn,
with the standard denoising loss and labels dropped once per sample for classifier-free guidance. The recipe
(``recipes/sft.py``) loads the data and the base model, and hands them to :class:`ColdStartTrainer`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from peft import LoraConfig

from ..cards import adapter_card
from ..data import StreamedSplit, dataset_to_tensors
from ..data.augmentation import IdentityAugmentation
from ..data.streaming import preprocessed, stream_batches
from ..generators import IdentityGenerator, class_embedders
from ..generators.adapter import add_lora, freeze_backbone, replace_class_embedders, save_adapter
from ..provenance import image_fingerprints, write_provenance
from ..settings import (
    DataSplitSettings,
    LoraSettings,
    ModelHubSettings,
    RuntimeSettings,
    SamplerSettings,
    StreamingSettings,
    check_settings,
    require_positive,
)
from ..utils.io import atomic_write_json
from ..utils.runtime import claim_process_precision
from ..utils.tracking import build_trackers, end_trackers
from ..utils.visualization import save_image_grid
from .training import (
    check_batch_memory,
    check_data_parallel,
    local_batch_size,
    run_record,
    run_training_phase,
    sample_batches,
    warmup_cosine,
)

logger = logging.getLogger(__name__)


@dataclass
class ColdStartConfig(
    DataSplitSettings, StreamingSettings, LoraSettings, SamplerSettings, ModelHubSettings, RuntimeSettings
):
    """The SFT (cold-start) recipe's settings; each field is a YAML key / CLI flag.

    The sampler settings (``num_inference_steps``, ``guidance_scale``, ``eta``) are those of the sample grid.
    """

    base_model: str = field(
        default="embedded:orl_faces",
        metadata={"help": "Base DiT: `embedded:orl_faces`, a local folder or a Hub id (facebook/DiT-XL-2-256)."},
    )
    base_revision: str | None = None
    output_dir: str = field(default="outputs/orl_faces/sft", metadata={"help": "The adapter folder."})
    resolution: int | None = field(
        default=None,
        metadata={"help": "Generation size in pixels; None: the base model's (paper: 128 for faces on DiT-XL/2-256)."},
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Embedders' learning rate (paper: 1e-5)."})
    max_steps: int = field(default=200, metadata={"help": "Optimizer steps: the training budget."})
    batch_size: int = field(
        default=32, metadata={"help": "Images per optimizer step over ALL processes (each trains on its share)."}
    )
    warmup_steps: int = 20
    p_uncond: float = field(default=0.1, metadata={"help": "Share of labels dropped to the null class (CFG)."})
    min_snr_gamma: float | None = field(default=5.0, metadata={"help": "Min-SNR loss weighting; None: off."})
    augment: bool = True
    lora_learning_rate: float = 1e-4
    max_minutes: float | None = field(
        default=None, metadata={"help": "Safety net: stop (and say so) after this many minutes; None: steps decide."}
    )
    checkpoint_every: int = 100
    resume: bool = False
    log_with: str | None = field(
        default=None,
        metadata={"help": "accelerate tracker: tensorboard, trackio, wandb... (files under output_dir/logs)."},
    )
    grid_per_identity: int = 4

    def __post_init__(self) -> None:
        check_settings(self)
        require_positive(self, "learning_rate", "lora_learning_rate", "max_steps", "batch_size", "checkpoint_every")
        require_positive(self, "resolution", "max_minutes", allow_none=True)
        require_positive(self, "grid_per_identity")
        if self.warmup_steps < 0 or not 0 <= self.p_uncond < 1:
            raise ValueError(
                f"--warmup_steps {self.warmup_steps} must be >= 0 and --p_uncond {self.p_uncond} in [0, 1)."
            )

    def denoising_settings(self) -> dict:
        """What DDPO's denoising anchor must reuse: recorded in the adapter's provenance."""
        return {"p_uncond": self.p_uncond, "min_snr_gamma": self.min_snr_gamma}


def prepare_identity_generator(
    base_model: str, label_names: list[str], lora_config: LoraConfig | None, revision: str | None = None
) -> IdentityGenerator:
    """Load the base, swap in zero-initialised identity embedders, freeze the backbone, add LoRA if asked."""
    generator = IdentityGenerator.from_pretrained(base_model, revision)
    replace_class_embedders(generator, label_names)
    if lora_config is not None:
        add_lora(generator, lora_config)
    freeze_backbone(generator)
    return generator


# Settings a resumed cold start may change: step counts and budgets, logging, the preview grid, where it writes.
RESUMABLE_SETTINGS = {
    "max_steps", "max_minutes", "checkpoint_every", "resume", "output_dir", "data_dir", "log_with",
    "grid_per_identity", "num_inference_steps", "guidance_scale", "guidance_interval", "eta", "push_to_hub",
    "hub_model_id", "hub_private",
}  # fmt: skip


class ColdStartTrainer:
    """Fits a prepared generator's identity embedders (+ LoRA) on real images with the denoising loss.

    It receives its model and data, a built split (decoded into tensors at once, batches drawn by
    :func:`.training.sample_batches`) or a streamed one (:class:`~rlsyn_trl.data.StreamedSplit`: batches read and
    decoded step by step, shuffled by shards and ``shuffle_buffer``); :meth:`train` runs the resumable optimisation
    loop, :meth:`save` writes the adapter folder (weights, card, provenance) and :meth:`sample_grid` one row of
    samples per identity.
    """

    def __init__(self, generator: IdentityGenerator, train: datasets.Dataset | StreamedSplit, config: ColdStartConfig):
        if len(train) == 0:
            raise ValueError("The cold start's train split is empty: check --dataset_name, --shots and --data_dir.")
        self.config = config
        check_data_parallel()
        trackers = build_trackers(config.log_with, "rlsyn_sft", Path(config.output_dir) / "logs")
        self.accelerator = Accelerator(
            mixed_precision=claim_process_precision(config.mixed_precision), log_with=trackers or None
        )
        check_data_parallel(self.accelerator.state)
        local_batch_size(config.batch_size, self.accelerator.num_processes)  # a clear error before any work
        self.accelerator.init_trackers("rlsyn_sft", config=asdict(config))
        generator.resolution = config.resolution or generator.resolution
        channels = 3 if generator.vae is not None else generator.transformer.config.in_channels
        self.num_images = len(train)
        if isinstance(train, StreamedSplit):
            transform = preprocessed(generator.resolution, channels)
            first = list(itertools.islice(train.dataset(), 2))  # the memory probe's images
            self.images, self.labels = transform(
                [item["image"] for item in first], torch.tensor([i["label"] for i in first])
            )
            # The chosen images and their files' sizes and times: hashing every image would read the set first.
            train_images = train.selection_fingerprint()
        else:
            self.images, self.labels = dataset_to_tensors(train, generator.resolution, channels)
            # The images themselves (not the folder's name or the split's options) decide what a checkpoint continues.
            train_images = image_fingerprints(train)
        self.record = run_record(config, RESUMABLE_SETTINGS, train_images=train_images)
        embedder_params = [p for e in class_embedders(generator.transformer) for p in e.parameters()]
        lora_params = [p for n, p in generator.transformer.named_parameters() if "lora_" in n]
        groups = [{"params": embedder_params, "lr": config.learning_rate}]
        if lora_params:
            groups.append({"params": lora_params, "lr": config.lora_learning_rate})
        optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        lr_scheduler = warmup_cosine(optimizer, config.warmup_steps, config.max_steps)
        transformer, self.optimizer, self.lr_scheduler = self.accelerator.prepare(
            generator.transformer, optimizer, lr_scheduler
        )
        generator.transformer = transformer
        if generator.vae is not None:
            generator.vae.to(self.accelerator.device).requires_grad_(False)
        self.generator = generator
        self.augment = IdentityAugmentation(translate=0.0625, brightness=0.1) if config.augment else None
        accelerator = self.accelerator
        # batch_size is the global batch: each process trains on its own slice (per-process noise: train()).
        process, processes = accelerator.process_index, accelerator.num_processes
        if isinstance(train, StreamedSplit):
            stream = train.dataset(config.seed, config.shuffle_buffer, process, processes)
            self.batches = stream_batches(stream, local_batch_size(config.batch_size, processes), transform)
        else:
            self.batches = sample_batches(self.images, self.labels, config.batch_size, config.seed, process, processes)
        self.steps_done = 0

    def loss(self, step: int) -> torch.Tensor:
        """The denoising loss on this process's share of the batch of ``step`` (a pure function of seed, step and
        process: resume-exact), augmented on the accelerator."""
        x, y = self.batches(step)
        device = self.accelerator.device
        x, y = x.to(device), y.to(device)
        x = self.augment(x) if self.augment is not None else x
        with self.accelerator.autocast():
            return self.generator.denoising_loss(x, y, self.config.p_uncond, self.config.min_snr_gamma)

    def probe_loss(self, samples: int) -> torch.Tensor:
        """The loss on the first ``samples`` training images (repeated when there are fewer): a memory probe."""
        index = torch.arange(samples) % len(self.images)
        device = self.accelerator.device
        prepared = self.generator.transformer
        self.generator.transformer = self.accelerator.unwrap_model(prepared)  # no DDP bookkeeping for a probe
        try:
            with self.accelerator.autocast():
                return self.generator.denoising_loss(
                    self.images[index].to(device), self.labels[index].to(device), self.config.p_uncond, None
                )
        finally:
            self.generator.transformer = prepared

    def train(self) -> int:
        """Run (or resume) the loop; returns the number of steps done."""
        config = self.config
        check_batch_memory(self.accelerator, self.probe_loss, config.batch_size)
        self.steps_done = run_training_phase(
            self.accelerator,
            "cold_start",
            self.generator.transformer,
            self.loss,
            self.optimizer,
            self.lr_scheduler,
            config.max_steps,
            Path(config.output_dir) / "checkpoints",
            config.checkpoint_every,
            config.resume,
            config.max_minutes,
            seed=config.seed,
            record=self.record,
        )
        if self.steps_done < config.max_steps:
            logger.warning(
                "The cold start stopped at step %d of %d: the --max_minutes %s budget ran out.",
                self.steps_done,
                config.max_steps,
                config.max_minutes,
            )
        self.generator.transformer = self.accelerator.unwrap_model(self.generator.transformer).eval()
        return self.steps_done

    def model_card(self, stage: str = "cold start") -> str:
        config = self.config
        return adapter_card(
            config,
            self.generator,
            config.lora_config(),
            config.base_model,
            stage,
            tags=[],
            steps=self.steps_done,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
        )

    def save(self, provenance: dict, output_dir: str | None = None) -> Path:
        """The adapter folder (weights, config, card, provenance, summary); main process only."""
        config = self.config
        output = Path(output_dir or config.output_dir)
        if self.accelerator.is_main_process:
            save_adapter(
                self.generator,
                output,
                config.base_model,
                config.base_revision,
                config.lora_config(),
                card=self.model_card(),
                extra={"stage": "cold_start", "shots": config.shots, "split_seed": config.split_seed},
            )
            write_provenance(output, provenance)
            atomic_write_json(output / "summary.json", {**self.summary(), "config": asdict(config)})
        self.accelerator.wait_for_everyone()
        return output

    def summary(self) -> dict:
        return {
            "steps": self.steps_done,
            "max_steps": self.config.max_steps,
            "stopped_by_time_budget": self.steps_done < self.config.max_steps,
            "num_identities": self.generator.num_classes,
            "train_images": self.num_images,
        }

    def sample_grid(self, path: str | Path | None = None) -> Path | None:
        """``grid_per_identity`` samples of every identity, one row each (main process only)."""
        config = self.config
        if not self.accelerator.is_main_process:
            return None
        labels = torch.arange(self.generator.num_classes).repeat_interleave(config.grid_per_identity)
        grid = self.generator.sample(labels, seed=config.seed, **config.sampler_options())
        return save_image_grid(
            grid, Path(path or Path(config.output_dir) / "samples.png"), nrow=config.grid_per_identity
        )

    def end(self) -> None:
        end_trackers(self.accelerator)
