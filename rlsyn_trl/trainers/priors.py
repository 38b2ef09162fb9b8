"""Stage 0: the general-domain priors, trained on PUBLIC identities only.

(a) a class-conditional pixel DiT (denoising loss, labels dropped once per sample for guidance, min-SNR loss
weighting, EMA), and (b) the identity feature extractor (CNN + CosFace margin head). The recipe
(``recipes/pretrain_prior.py``) composes the building blocks here: :func:`resolve_prior_split` (the public split,
refusing a private one), :func:`train_encoder`, :func:`train_generator`, :func:`save_prior` (weights and
provenance), :func:`evaluate_prior` (sample grid, face detection, self-consistency). Training checkpoints with
accelerate and resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from ..data import identity_builder
from ..data.augmentation import IdentityAugmentation
from ..encoders import IdentityEncoder, IdentityEncoderConfig
from ..generation.realism import face_detection_rate
from ..generators import IdentityGenerator, build_pixel_dit, default_scheduler, disable_label_dropout
from ..provenance import DEFAULT_DATASET, DataSplit, resolve_data_split, write_provenance
from ..settings import (
    DataSplitSettings,
    EncoderTrainingSettings,
    RuntimeSettings,
    check_settings,
    require,
    require_positive,
)
from ..utils.tracking import scalar_config
from ..utils.visualization import save_image_grid
from .public_faces import PublicFacesSettings
from .training import Batches, local_batch_size, run_training_phase, sample_batches, warmup_cosine

logger = logging.getLogger(__name__)

GENERATOR_DIR = "generator"
ENCODER_DIR = "encoder"
PUBLIC_CONFIG = "public"
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def public_config(dataset_name: str) -> str | None:
    """The config of ``dataset_name`` that holds only public identities (ORL: ``public``), or None if it has none."""
    builder = identity_builder(dataset_name)
    names = {config.name for config in getattr(builder, "BUILDER_CONFIGS", ())}
    return PUBLIC_CONFIG if PUBLIC_CONFIG in names else None


def check_public_split(dataset_name: str, dataset_config: str | None) -> None:
    """The priors never see a target identity: a dataset with a public config must be used through it."""
    public = public_config(dataset_name)
    require(
        public is None or dataset_config == public,
        "dataset_config",
        dataset_config,
        f"{dataset_name} keeps its target identities apart from the public ones, and the priors must never see "
        f"a target identity: use --dataset_config {public}.",
    )


@dataclass
class PriorConfig(DataSplitSettings, PublicFacesSettings, RuntimeSettings, EncoderTrainingSettings):
    """The priors recipe's settings; each field is a YAML key / CLI flag.

    The data split comes from :class:`DataSplitSettings` (here defaulting to the public ORL identities, which is
    the only config of ``orl_faces`` the priors accept), synthetic public faces beside it from
    :class:`PublicFacesSettings`, seed / precision from :class:`RuntimeSettings` and the encoder's architecture and
    training from :class:`EncoderTrainingSettings`.
    """

    dataset_name: str | None = field(
        default=DEFAULT_DATASET, metadata={"help": "A registered identity benchmark (orl_faces, ...)."}
    )
    dataset_config: str | None = field(
        default=PUBLIC_CONFIG,
        metadata={
            "help": "The config holding the PUBLIC identities (ORL: public, the only one accepted). "
            "Unset: the dataset's public config."
        },
    )
    output_dir: str = field(default="outputs/orl_faces/prior", metadata={"help": "Where models, grids, logs go."})
    resolution: int = 32
    channels: int = field(default=1, metadata={"help": "1 (grayscale) or 3 (RGB)."})
    # generator
    train_generator: bool = True
    init_generator: str | None = field(
        default=None,
        metadata={
            "help": "A saved prior generator (folder, Hub id, embedded:orl_faces) to continue training instead of "
            "random weights, e.g. the shipped prior with synthetic public faces added: its label names, size and "
            "prediction type must be this run's. None: a new DiT."
        },
    )
    width: int = 128
    depth: int = 6
    heads: int = 4
    patch_size: int = 2
    prediction_type: str = field(default="v_prediction", metadata={"help": "epsilon, v_prediction or sample."})
    generator_steps: int = 3000
    generator_batch_size: int = field(default=64, metadata={"help": "Over ALL processes (each trains on its share)."})
    generator_lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    p_uncond: float = field(default=0.1, metadata={"help": "Per-sample label drop rate for guidance."})
    min_snr_gamma: float | None = field(default=5.0, metadata={"help": "Min-SNR loss weighting; None disables."})
    use_lfw_faces: bool = field(
        default=True, metadata={"help": "Add scikit-image's 100 LFW face crops as unconditional (null-class) data."}
    )
    null_class_share: float | None = field(
        default=None,
        metadata={
            "help": "Largest share of null-class images (LFW crops, synthetic public faces) in the generator's "
            "batches: the identity images are repeated to keep it. None: the data's own share (1,000 faces leave "
            "the 20 identities 200 of 3,300 images)."
        },
    )
    max_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Stop the generator phase after this many minutes (0: after one step); the summary says so "
            "and `--resume true` continues. None: the steps decide."
        },
    )
    # encoder (its architecture and training: EncoderTrainingSettings)
    train_encoder: bool = True
    # bookkeeping
    checkpoint_every: int = 500
    resume: bool = field(default=False, metadata={"help": "Continue from the newest checkpoint in output_dir."})
    grid_guidance_scale: float = 2.0
    grid_inference_steps: int = 50
    grid_per_identity: int = 8
    log_with: str | None = field(default=None, metadata={"help": "accelerate tracker (tensorboard, wandb, ...)."})

    def __post_init__(self) -> None:
        check_settings(self)
        self.dataset_name = self.dataset_name or DEFAULT_DATASET
        self.dataset_config = self.dataset_config or public_config(self.dataset_name)
        check_public_split(self.dataset_name, self.dataset_config)
        if self.dataset_config == public_config(self.dataset_name):
            for name in ("shots", "split_seed"):
                require(
                    getattr(self, name) is None,
                    name,
                    getattr(self, name),
                    f"the {self.dataset_config} config trains on every image of its identities: leave it unset.",
                )
        require_positive(
            self,
            "resolution",
            "width",
            "depth",
            "heads",
            "patch_size",
            "generator_steps",
            "generator_batch_size",
            "generator_lr",
            "checkpoint_every",
            "grid_inference_steps",
            "grid_per_identity",
        )
        require_positive(self, "min_snr_gamma", allow_none=True)
        require(self.channels in (1, 3), "channels", self.channels, "must be 1 (grayscale) or 3 (RGB).")
        require(
            self.resolution % self.patch_size == 0,
            "patch_size",
            self.patch_size,
            f"must divide --resolution {self.resolution}.",
        )
        require(self.width % self.heads == 0, "heads", self.heads, f"must divide --width {self.width}.")
        require(
            self.prediction_type in PREDICTION_TYPES,
            "prediction_type",
            self.prediction_type,
            f"must be one of {PREDICTION_TYPES}.",
        )
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0.")
        require(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "must be in [0, 1).")
        require(0 <= self.p_uncond < 1, "p_uncond", self.p_uncond, "must be in [0, 1).")
        share = self.null_class_share
        require(share is None or 0 < share < 1, "null_class_share", share, "must be in (0, 1), or null.")
        require(
            self.max_minutes is None or self.max_minutes >= 0,
            "max_minutes",
            self.max_minutes,
            "must be >= 0 (0: stop after one step), or null.",
        )
        require(self.grid_guidance_scale >= 0, "grid_guidance_scale", self.grid_guidance_scale, "must be >= 0.")
        require(
            self.train_generator or not self.init_generator,
            "init_generator",
            self.init_generator,
            "continues the generator phase, which --train_generator false skips: drop one of them.",
        )
        require(
            self.train_generator or self.train_encoder,
            "train_generator",
            self.train_generator,
            "with --train_encoder false there is nothing to train: enable at least one of them.",
        )

    def tracker_config(self) -> dict[str, Any]:
        """The config as trackers accept it (scalars only: tensorboard's hparams refuse lists and None)."""
        return scalar_config(asdict(self))

    def check_processes(self, num_processes: int) -> None:
        """Both global batches must split evenly over the processes: checked before the first phase trains."""
        local_batch_size(self.generator_batch_size, num_processes, "generator_batch_size")
        local_batch_size(self.encoder_batch_size, num_processes, "encoder_batch_size")


def resolve_prior_split(config: PriorConfig) -> DataSplit:
    """The public split the priors train on; a private config is refused (again: the config may have been edited
    after it was parsed). The public config uses every image of its identities, so no shots or split seed."""
    check_public_split(config.dataset_name or DEFAULT_DATASET, config.dataset_config)
    split = resolve_data_split(config)
    if split.dataset_config == public_config(split.dataset_name):
        split = dataclasses.replace(split, shots=None, split_seed=None)
    return split


@dataclass
class TrainedPrior:
    """A trained model and how far its phase got (the generator's ``max_minutes`` can cut it short)."""

    model: IdentityGenerator | IdentityEncoder
    steps: int
    max_steps: int

    @property
    def stopped_by_time_budget(self) -> bool:
        return self.steps < self.max_steps


def lfw_face_crops(resolution: int) -> torch.Tensor:
    """The 100 LFW face crops scikit-image ships (first half of ``lfw_subset``), in ``[-1, 1]`` at ``resolution``."""
    from skimage.data import lfw_subset

    faces = torch.from_numpy(lfw_subset()[:100]).float()[:, None]
    faces = F.interpolate(faces, size=(resolution, resolution), mode="bicubic", align_corners=False)
    return (faces * 2 - 1).clamp(-1, 1)


def cap_null_share(
    images: torch.Tensor, labels: torch.Tensor, null_label: int, share: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data with its identity images repeated in order (whole copies, then the first ones once more) until the
    null-class images (``null_label``) are at most ``share`` of it; unchanged when they already are, or for None.

    Thousands of unlabelled faces beside 200 labelled photos would otherwise leave the label table a few percent of
    the steps: the prior learns faces and forgets the identities it is conditioned on."""
    null = labels == null_label
    count, named = int(null.sum()), int((~null).sum())
    if share is None or not named or count <= share * len(labels):
        return images, labels
    wanted = math.ceil(count * (1 - share) / share - 1e-9)  # identity images leaving the null class at `share`
    order = torch.arange(wanted) % named
    index = torch.cat([torch.nonzero(~null).flatten()[order], torch.nonzero(null).flatten()])
    return images[index], labels[index]


def start_generator(config: PriorConfig, label_names: list[str]) -> IdentityGenerator:
    """The saved generator ``--init_generator`` names, refused unless it is the DiT this run would build: same
    labels in the same order (the label table's rows are the identities), size and prediction type."""
    generator = IdentityGenerator.from_pretrained(config.init_generator)
    require(
        list(generator.label_names) == list(label_names),
        "init_generator",
        config.init_generator,
        f"its labels {list(generator.label_names)[:4]}... are not this split's {list(label_names)[:4]}...: continue "
        "a prior trained on the same public identities.",
    )
    dit = generator.transformer.config
    built = {
        "resolution": dit.sample_size,
        "channels": dit.in_channels,
        "width": dit.num_attention_heads * dit.attention_head_dim,
        "depth": dit.num_layers,
        "heads": dit.num_attention_heads,
        "patch_size": dit.patch_size,
        "prediction_type": generator.scheduler.config.prediction_type,
    }
    for name, value in built.items():
        require(
            getattr(config, name) == value,
            name,
            getattr(config, name),
            f"--init_generator {config.init_generator} has {name} {value}: set --{name} {value}.",
        )
    transformer = generator.transformer.float().train().requires_grad_(True)
    disable_label_dropout(transformer)
    return generator


def train_generator(
    config: PriorConfig,
    accelerator: Accelerator,
    images: torch.Tensor,
    labels: torch.Tensor,
    label_names: list[str],
    null_images: torch.Tensor | None = None,
    start: IdentityGenerator | None = None,
) -> TrainedPrior:
    """Phase (a): the pixel DiT prior on public identities (+ LFW crops and ``null_images``, e.g. synthetic public
    faces, as null-class data: they teach faces without adding identities to the label table), EMA weights; from
    ``start`` (:func:`start_generator`) when given, else from a new DiT."""
    extra = [lfw_face_crops(config.resolution)] if config.use_lfw_faces else []
    extra += [null_images] if null_images is not None else []
    for faces in extra:
        if config.channels == 3 and faces.shape[1] == 1:
            faces = faces.expand(-1, 3, -1, -1)
        images = torch.cat([images, faces])
        labels = torch.cat([labels, torch.full((len(faces),), len(label_names), dtype=torch.long)])
    images, labels = cap_null_share(images, labels, len(label_names), config.null_class_share)
    if start is not None:
        transformer = start.transformer
    else:
        transformer = build_pixel_dit(
            len(label_names),
            config.resolution,
            config.channels,
            config.width,
            config.depth,
            config.heads,
            config.patch_size,
        )
    generator = IdentityGenerator(transformer, default_scheduler(config.prediction_type), label_names)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=config.generator_lr, weight_decay=0.0)
    lr_scheduler = warmup_cosine(optimizer, config.warmup_steps, config.generator_steps)
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    # After prepare: DDP has broadcast process 0's initial weights, so every process's average starts from them.
    ema = EMAModel(accelerator.unwrap_model(transformer).parameters(), decay=config.ema_decay)
    accelerator.register_for_checkpointing(ema)
    generator.transformer = transformer
    augment = IdentityAugmentation()
    batches = sample_batches(
        images,
        labels,
        config.generator_batch_size,
        config.seed,
        accelerator.process_index,
        accelerator.num_processes,
        "generator_batch_size",
    )

    def loss_fn(step: int) -> torch.Tensor:
        x, y = batches(step)
        x, y = augment(x.to(accelerator.device)), y.to(accelerator.device)
        with accelerator.autocast():
            return generator.denoising_loss(x, y, config.p_uncond, config.min_snr_gamma)

    steps = run_training_phase(
        accelerator,
        "generator",
        transformer,
        loss_fn,
        optimizer,
        lr_scheduler,
        config.generator_steps,
        Path(config.output_dir) / "checkpoints" / GENERATOR_DIR,
        config.checkpoint_every,
        config.resume,
        config.max_minutes,
        after_step=lambda: ema.step(accelerator.unwrap_model(transformer).parameters()),
        seed=config.seed,
    )
    if steps < config.generator_steps:
        logger.warning(
            "The generator stopped at step %d of %d: the --max_minutes %s budget ran out (--resume true continues).",
            steps,
            config.generator_steps,
            config.max_minutes,
        )
    final = accelerator.unwrap_model(transformer)
    ema.copy_to(final.parameters())
    generator.transformer = final.eval()
    return TrainedPrior(generator, steps, config.generator_steps)


def train_encoder(
    config: PriorConfig, accelerator: Accelerator, images: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> TrainedPrior:
    """Phase (b): the identity feature extractor with a CosFace margin head, on images held as tensors."""
    batches = sample_batches(
        images,
        labels,
        config.encoder_batch_size,
        config.seed + 1,
        accelerator.process_index,
        accelerator.num_processes,
        "encoder_batch_size",
    )
    return train_encoder_on_batches(config, accelerator, batches, num_classes)


def train_encoder_on_batches(
    config: EncoderTrainingSettings, accelerator: Accelerator, batches: Batches, num_classes: int
) -> TrainedPrior:
    """The identity feature extractor with a CosFace margin head (pytorch-metric-learning), trained on
    ``batches(step)``; ``config`` also gives ``channels``, ``resolution``, ``seed``, ``output_dir`` (its
    checkpoints go to ``checkpoints/encoder``), ``checkpoint_every`` and ``resume``."""
    from pytorch_metric_learning.losses import CosFaceLoss

    encoder = IdentityEncoder(
        IdentityEncoderConfig(
            num_channels=config.channels,
            image_size=config.resolution,
            widths=config.encoder_widths,
            embedding_size=config.embedding_size,
        )
    )
    head = CosFaceLoss(num_classes, config.embedding_size, margin=config.cosface_margin, scale=config.cosface_scale)
    parameters = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.encoder_lr, weight_decay=5e-4)
    lr_scheduler = warmup_cosine(optimizer, min(100, config.encoder_steps // 10), config.encoder_steps)
    encoder, head, optimizer, lr_scheduler = accelerator.prepare(encoder, head, optimizer, lr_scheduler)
    augment = IdentityAugmentation()

    def loss_fn(step: int) -> torch.Tensor:
        x, y = batches(step)
        x, y = augment(x.to(accelerator.device)), y.to(accelerator.device)
        head.train()
        return head(encoder(x), y)

    steps = run_training_phase(
        accelerator,
        "encoder",
        encoder,
        loss_fn,
        optimizer,
        lr_scheduler,
        config.encoder_steps,
        Path(config.output_dir) / "checkpoints" / ENCODER_DIR,
        config.checkpoint_every,
        config.resume,
        seed=config.seed + 1,
    )
    return TrainedPrior(accelerator.unwrap_model(encoder).eval(), steps, config.encoder_steps)


def save_prior(trained: TrainedPrior, folder: str | Path, provenance: dict) -> Path:
    """``save_pretrained`` weights and config, plus the ``provenance.json`` a later stage's chain starts from."""
    folder = Path(folder)
    trained.model.save_pretrained(folder)
    write_provenance(folder, provenance)
    return folder


def sample_grid(
    generator: IdentityGenerator, per_identity: int, guidance_scale: float, steps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_identity`` samples of every identity (row by row) and their labels."""
    labels = torch.arange(generator.num_classes).repeat_interleave(per_identity)
    images = generator.sample(labels, seed=seed, guidance_scale=guidance_scale, num_inference_steps=steps)
    return images, labels


def evaluate_prior(
    config: PriorConfig,
    generator: IdentityGenerator,
    encoder: IdentityEncoder | None,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> dict[str, float]:
    """A sample grid (``prior_samples.png``), how often a face detector finds a face in it and in the real images,
    and, with an encoder, how often a sample's nearest real identity is its own (self-consistency)."""
    grid, grid_labels = sample_grid(
        generator, config.grid_per_identity, config.grid_guidance_scale, config.grid_inference_steps, config.seed
    )
    save_image_grid(grid, Path(config.output_dir) / "prior_samples.png", nrow=config.grid_per_identity)
    metrics = {
        "face_detection_rate": face_detection_rate(grid),
        "real_face_detection_rate": face_detection_rate(images),
    }
    if encoder is not None:
        from ..metrics.identity import identity_consistency

        metrics["self_consistency"] = identity_consistency(
            encoder.encode_batched(grid), grid_labels, encoder.encode_batched(images), labels
        )
    return metrics
