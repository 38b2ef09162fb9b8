"""Stage 0: train the general-domain priors on PUBLIC identities only.

(a) a class-conditional pixel DiT (denoising loss, labels dropped once per sample for guidance, min-SNR loss
weighting, EMA), and (b) the identity feature extractor (CNN + CosFace margin head). Both are saved with
``save_pretrained``; training checkpoints with accelerate and resumes where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.training_utils import EMAModel

from .data import dataset_to_tensors, load_identity_dataset
from .data.augmentation import IdentityAugmentation
from .encoders import IdentityEncoder, IdentityEncoderConfig
from .generators import IdentityGenerator, build_pixel_dit, default_scheduler
from .io import atomic_write_json
from .realism import face_detection_rate
from .training import run_training_phase, sample_batches, warmup_cosine
from .visualization import save_image_grid

logger = logging.getLogger(__name__)

GENERATOR_DIR = "generator"
ENCODER_DIR = "encoder"


@dataclass
class PriorConfig:
    """Everything the priors recipe needs; each field is a YAML key / CLI flag."""

    output_dir: str = field(default="outputs/orl_faces/prior", metadata={"help": "Where models, grids, logs go."})
    dataset_name: str = field(default="orl_faces", metadata={"help": "Registered identity dataset."})
    dataset_config: str = field(default="public", metadata={"help": "Config holding the PUBLIC identities."})
    data_dir: str | None = field(default=None, metadata={"help": "Local copy of the dataset (optional for ORL)."})
    resolution: int = 32
    channels: int = 1
    seed: int = 0
    # generator
    train_generator: bool = True
    width: int = 128
    depth: int = 6
    heads: int = 4
    patch_size: int = 2
    prediction_type: str = field(default="v_prediction", metadata={"help": "epsilon, v_prediction or sample."})
    generator_steps: int = 3000
    generator_batch_size: int = 64
    generator_lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    p_uncond: float = field(default=0.1, metadata={"help": "Per-sample label drop rate for guidance."})
    min_snr_gamma: float | None = field(default=5.0, metadata={"help": "Min-SNR loss weighting; None disables."})
    use_lfw_faces: bool = field(
        default=True, metadata={"help": "Add scikit-image's 100 LFW face crops as unconditional (null-class) data."}
    )
    max_minutes: float | None = field(default=None, metadata={"help": "Stop the generator phase after this time."})
    mixed_precision: str = field(default="no", metadata={"help": "accelerate mixed precision: no, bf16 or fp16."})
    # encoder
    train_encoder: bool = True
    encoder_widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    embedding_size: int = 128
    encoder_steps: int = 1500
    encoder_batch_size: int = 64
    encoder_lr: float = 2e-3
    cosface_margin: float = 0.25
    cosface_scale: float = 16.0
    # bookkeeping
    checkpoint_every: int = 500
    resume: bool = field(default=False, metadata={"help": "Continue from the newest checkpoint in output_dir."})
    grid_guidance_scale: float = 2.0
    grid_inference_steps: int = 50
    grid_per_identity: int = 8
    log_with: str | None = field(default=None, metadata={"help": "accelerate tracker (tensorboard, wandb, ...)."})


def lfw_face_crops(resolution: int) -> torch.Tensor:
    """The 100 LFW face crops scikit-image ships (first half of ``lfw_subset``), in ``[-1, 1]`` at ``resolution``."""
    from skimage.data import lfw_subset

    faces = torch.from_numpy(lfw_subset()[:100]).float()[:, None]
    faces = F.interpolate(faces, size=(resolution, resolution), mode="bicubic", align_corners=False)
    return (faces * 2 - 1).clamp(-1, 1)


def train_generator(config: PriorConfig, accelerator: Accelerator, images, labels, label_names) -> IdentityGenerator:
    """Phase (a): the pixel DiT prior on public identities (+ LFW crops as null-class data)."""
    if config.use_lfw_faces:
        faces = lfw_face_crops(config.resolution)
        if config.channels == 3:
            faces = faces.expand(-1, 3, -1, -1)
        images = torch.cat([images, faces])
        labels = torch.cat([labels, torch.full((len(faces),), len(label_names), dtype=torch.long)])
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
    ema = EMAModel(transformer.parameters(), decay=config.ema_decay)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=config.generator_lr, weight_decay=0.0)
    lr_scheduler = warmup_cosine(optimizer, config.warmup_steps, config.generator_steps)
    transformer, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    accelerator.register_for_checkpointing(ema)
    generator.transformer = transformer
    augment = IdentityAugmentation()
    batches = sample_batches(images, labels, config.generator_batch_size, config.seed)

    def loss_fn(step: int) -> torch.Tensor:
        x, y = batches(step)
        x, y = augment(x).to(accelerator.device), y.to(accelerator.device)
        with accelerator.autocast():
            return generator.denoising_loss(x, y, config.p_uncond, config.min_snr_gamma)

    run_training_phase(
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
    )
    final = accelerator.unwrap_model(transformer)
    ema.copy_to(final.parameters())
    generator.transformer = final.eval()
    return generator


def train_encoder(config: PriorConfig, accelerator: Accelerator, images, labels, num_classes: int) -> IdentityEncoder:
    """Phase (b): the identity feature extractor with a CosFace margin head (pytorch-metric-learning)."""
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
    batches = sample_batches(images, labels, config.encoder_batch_size, config.seed + 1)

    def loss_fn(step: int) -> torch.Tensor:
        x, y = batches(step)
        x, y = augment(x).to(accelerator.device), y.to(accelerator.device)
        head.train()
        return head(encoder(x), y)

    run_training_phase(
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
    )
    return accelerator.unwrap_model(encoder).eval()


def sample_grid(
    generator: IdentityGenerator, per_identity: int, guidance_scale: float, steps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_identity`` samples of every identity (row by row) and their labels."""
    labels = torch.arange(generator.num_classes).repeat_interleave(per_identity)
    images = generator.sample(labels, seed=seed, guidance_scale=guidance_scale, num_inference_steps=steps)
    return images, labels


def train_priors(config: PriorConfig) -> dict:
    """Run the recipe: generator and/or encoder on the public identities, then save, grid and summarise."""
    torch.set_flush_denormal(True)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=config.log_with)
    accelerator.init_trackers("rlsyn_prior", config=asdict(config))
    set_seed(config.seed)
    output = Path(config.output_dir)
    data = load_identity_dataset(config.dataset_name, config.dataset_config, data_dir=config.data_dir)["train"]
    label_names = data.features["label"].names
    images, labels = dataset_to_tensors(data, config.resolution, config.channels)
    summary: dict = {"config": asdict(config)}
    encoder = None
    if config.train_encoder:
        encoder = train_encoder(config, accelerator, images, labels, len(label_names))
        if accelerator.is_main_process:
            encoder.save_pretrained(output / ENCODER_DIR)
    if config.train_generator:
        generator = train_generator(config, accelerator, images, labels, label_names)
        if accelerator.is_main_process:
            generator.save_pretrained(output / GENERATOR_DIR)
            grid, grid_labels = sample_grid(
                generator,
                config.grid_per_identity,
                config.grid_guidance_scale,
                config.grid_inference_steps,
                config.seed,
            )
            save_image_grid(grid, output / "prior_samples.png", nrow=config.grid_per_identity)
            summary["face_detection_rate"] = face_detection_rate(grid)
            summary["real_face_detection_rate"] = face_detection_rate(images)
            if encoder is not None:
                from .metrics.identity import identity_consistency

                summary["self_consistency"] = identity_consistency(
                    encoder.encode_batched(grid), grid_labels, encoder.encode_batched(images), labels
                )
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output / "summary.json", summary)
    accelerator.end_training()
    return summary
