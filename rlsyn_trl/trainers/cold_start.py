"""Stage 1, cold start: fit fresh zero-initialised identity embedders (+ optional LoRA) on the few real images.

The base DiT stays frozen; only the new class embedders of every block (and LoRA weights when configured) learn,
with the standard denoising loss and labels dropped once per sample for classifier-free guidance.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import LoraConfig

from ..cards import adapter_card
from ..data import dataset_to_tensors, load_identity_dataset
from ..data.augmentation import IdentityAugmentation
from ..generators import IdentityGenerator, class_embedders
from ..generators.adapter import LoraSettings, add_lora, freeze_backbone, replace_class_embedders, save_adapter
from ..training import run_training_phase, sample_batches, warmup_cosine
from ..visualization import save_image_grid

logger = logging.getLogger(__name__)


@dataclass
class ColdStartConfig(LoraSettings):
    """The SFT (cold-start) recipe's settings; each field is a YAML key / CLI flag."""

    base_model: str = field(
        default="embedded:orl_faces",
        metadata={"help": "Base DiT: `embedded:orl_faces`, a local folder or a Hub id (facebook/DiT-XL-2-256)."},
    )
    base_revision: str | None = None
    dataset_name: str = "orl_faces"
    dataset_config: str = "private"
    data_dir: str | None = None
    shots: int | None = field(
        default=2, metadata={"help": "Real training images per identity (ORL: 1, 2, 3 or 5); None: all (ReID)."}
    )
    split_seed: int = 0
    output_dir: str = field(default="outputs/orl_faces/sft", metadata={"help": "The adapter folder."})
    resolution: int | None = field(
        default=None,
        metadata={"help": "Generation size in pixels; None: the base model's (paper: 128 for faces on DiT-XL/2-256)."},
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Embedders' learning rate (paper: 1e-5)."})
    max_steps: int = 200
    batch_size: int = 32
    warmup_steps: int = 20
    p_uncond: float = 0.1
    min_snr_gamma: float | None = 5.0
    augment: bool = True
    lora_learning_rate: float = 1e-4
    seed: int = 0
    max_minutes: float | None = None
    checkpoint_every: int = 100
    resume: bool = False
    mixed_precision: str = "no"
    log_with: str | None = None
    grid_per_identity: int = 4
    guidance_scale: float = 2.0
    num_inference_steps: int = 50
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = field(default=True, metadata={"help": "Hub repos are private unless set to false."})


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


def cold_start_card(config: ColdStartConfig, generator: IdentityGenerator, stage: str, extra: str = "") -> str:
    """The adapter's model card, from ``model_cards/identity_adapter.md``."""
    return adapter_card(
        config,
        generator,
        config.lora_config(),
        config.base_model,
        stage,
        tags=[],
        steps=config.max_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        extra=extra,
    )


def train_cold_start(config: ColdStartConfig) -> tuple[IdentityGenerator, dict]:
    """Run the cold start and write the adapter folder (plus a per-identity sample grid) to ``output_dir``."""
    torch.set_flush_denormal(True)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=config.log_with)
    accelerator.init_trackers("rlsyn_sft", config=asdict(config))
    set_seed(config.seed)
    data = load_identity_dataset(
        config.dataset_name, config.dataset_config, data_dir=config.data_dir, shots=config.shots, seed=config.split_seed
    )["train"]
    if len(data) == 0:
        raise ValueError(f"The train split of {config.dataset_name}/{config.dataset_config} is empty.")
    label_names = data.features["label"].names
    lora_config = config.lora_config()
    generator = prepare_identity_generator(config.base_model, label_names, lora_config, config.base_revision)
    generator.resolution = config.resolution or generator.resolution
    channels = 3 if generator.vae is not None else generator.transformer.config.in_channels
    images, labels = dataset_to_tensors(data, generator.resolution, channels)
    embedder_params = [p for e in class_embedders(generator.transformer) for p in e.parameters()]
    lora_params = [p for n, p in generator.transformer.named_parameters() if "lora_" in n]
    groups = [{"params": embedder_params, "lr": config.learning_rate}]
    if lora_params:
        groups.append({"params": lora_params, "lr": config.lora_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    lr_scheduler = warmup_cosine(optimizer, config.warmup_steps, config.max_steps)
    transformer, optimizer, lr_scheduler = accelerator.prepare(generator.transformer, optimizer, lr_scheduler)
    generator.transformer = transformer
    if generator.vae is not None:
        generator.vae.to(accelerator.device).requires_grad_(False)
    augment = IdentityAugmentation(translate=0.0625 if config.augment else 0, brightness=0.1 if config.augment else 0)
    batches = sample_batches(images, labels, config.batch_size, config.seed)

    def loss_fn(step: int) -> torch.Tensor:
        x, y = batches(step)
        x = augment(x) if config.augment else x
        with accelerator.autocast():
            return generator.denoising_loss(
                x.to(accelerator.device), y.to(accelerator.device), config.p_uncond, config.min_snr_gamma
            )

    output = Path(config.output_dir)
    steps = run_training_phase(
        accelerator,
        "cold_start",
        transformer,
        loss_fn,
        optimizer,
        lr_scheduler,
        config.max_steps,
        output / "checkpoints",
        config.checkpoint_every,
        config.resume,
        config.max_minutes,
    )
    generator.transformer = accelerator.unwrap_model(transformer).eval()
    summary = {"steps": steps, "num_identities": len(label_names), "train_images": len(images)}
    if accelerator.is_main_process:
        save_adapter(
            generator,
            output,
            config.base_model,
            config.base_revision,
            lora_config,
            card=cold_start_card(config, generator, "cold start"),
            extra={"stage": "cold_start", "shots": config.shots, "split_seed": config.split_seed},
        )
        grid_labels = torch.arange(generator.num_classes).repeat_interleave(config.grid_per_identity)
        grid = generator.sample(
            grid_labels,
            seed=config.seed,
            guidance_scale=config.guidance_scale,
            num_inference_steps=config.num_inference_steps,
        )
        save_image_grid(grid, output / "samples.png", nrow=config.grid_per_identity)
        tmp = output / "summary.json.tmp"
        tmp.write_text(json.dumps({**summary, "config": asdict(config)}, indent=2))
        os.replace(tmp, output / "summary.json")
        if config.push_to_hub:
            from ..hub import push_adapter

            summary["hub_url"] = push_adapter(output, config.hub_model_id, private=config.hub_private)
    accelerator.end_training()
    return generator, summary
