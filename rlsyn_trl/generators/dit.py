"""Class-conditional DiT generators: build, patch for small-data training, save, load and sample.

One :class:`IdentityGenerator` serves the embedded pixel-space prior and a latent DiT such as
``facebook/DiT-XL-2-256`` (folder layout ``transformer/``, ``vae/``, ``scheduler/``, ``model_index.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

from ..utils.io import atomic_write_json
from ..utils.model_sources import GENERATOR_KIND, MODEL_INDEX
from .loading import load_generator, register_folder_loader
from .lora_merge import merged_lora
from .reference import ReferenceStart, reference_rng
from .sampling import classifier_free_guidance, ddim_sample, uses_guidance

GENERATOR_FILES = [MODEL_INDEX, "transformer/*", "scheduler/*", "vae/*"]


def class_embedders(transformer: DiTTransformer2DModel) -> list[torch.nn.Module]:
    """Every block's label embedder (diffusers gives each DiT block its own; block 0's also conditions the output)."""
    return [block.norm1.emb.class_embedder for block in transformer.transformer_blocks]


def disable_label_dropout(transformer: DiTTransformer2DModel) -> None:
    """Stop each block dropping labels independently: we drop labels once per batch (the null id) instead."""
    for embedder in class_embedders(transformer):
        embedder.dropout_prob = 0.0


def zero_init_modulation(transformer: DiTTransformer2DModel) -> None:
    """adaLN-Zero initialisation, as in the DiT paper (diffusers leaves these layers at std ~0.05)."""
    for block in transformer.transformer_blocks:
        torch.nn.init.zeros_(block.norm1.linear.weight)
        torch.nn.init.zeros_(block.norm1.linear.bias)
    for layer in (transformer.proj_out_1, transformer.proj_out_2):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)


def build_pixel_dit(
    num_classes: int,
    resolution: int = 32,
    channels: int = 1,
    width: int = 128,
    depth: int = 6,
    heads: int = 4,
    patch_size: int = 2,
) -> DiTTransformer2DModel:
    """A small pixel-space DiT from scratch (the embedded default prior), initialised for training."""
    if width % heads:
        raise ValueError(f"width {width} must be divisible by heads {heads}")
    transformer = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=channels,
        out_channels=channels,
        num_layers=depth,
        sample_size=resolution,
        patch_size=patch_size,
        num_embeds_ada_norm=num_classes,
    )
    zero_init_modulation(transformer)
    disable_label_dropout(transformer)
    return transformer


def default_scheduler(prediction_type: str = "v_prediction") -> DDIMScheduler:
    """DDIM on a cosine schedule; ``clip_sample`` keeps pixel-space x0 estimates inside the image range."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=True,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    )


def min_snr_weights(scheduler: DDIMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights, expressed for the scheduler's prediction target."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if scheduler.config.prediction_type == "epsilon":
        return clipped / snr
    return clipped


@dataclass
class SampleTrajectory:
    """What DDPO needs from one sampling run: the chain of latents and each step's log-probability."""

    images: torch.Tensor  # [B, C, H, W] in [-1, 1]
    latents: torch.Tensor  # [B, T + 1, ...] from pure noise to the final latent
    log_probs: torch.Tensor  # [B, T]
    timesteps: torch.Tensor  # [T]


class IdentityGenerator:
    """A class-conditional DiT + DDIM scheduler (+ optional VAE) whose classes are identities.

    The null class (index ``num_classes``) is the unconditional branch of classifier-free guidance.
    """

    def __init__(
        self,
        transformer: DiTTransformer2DModel,
        scheduler: DDIMScheduler,
        label_names: Sequence[str],
        vae: AutoencoderKL | None = None,
        resolution: int | None = None,
        source: str | None = None,
    ):
        self.transformer = transformer
        self.scheduler = scheduler
        self.vae = vae
        self.label_names = list(label_names)
        self.source = source
        table = class_embedders(transformer)[0].embedding_table.num_embeddings
        if table != len(self.label_names) + 1:
            raise ValueError(
                f"The transformer's class embedding has {table} rows but {len(self.label_names)} labels were given "
                "(expected labels + 1 null class)."
            )
        factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.vae_scale_factor = factor
        self.resolution = resolution or transformer.config.sample_size * factor

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the transformer's input layer: the dtype latents must have when they enter it."""
        transformer = getattr(self.transformer, "module", self.transformer)  # DDP-wrapped while training
        return transformer.pos_embed.proj.weight.dtype

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.vae_scale_factor
        return (self.transformer.config.in_channels, side, side)

    def to(self, device: torch.device | str) -> IdentityGenerator:
        self.transformer.to(device)
        if self.vae is not None:
            self.vae.to(device)
        return self

    def labels_for(self, identities: Sequence[str | int]) -> torch.Tensor:
        """Integer labels for identity names (or ints), with a clear error for names outside the label space."""
        labels = []
        for identity in identities:
            if isinstance(identity, str):
                if identity not in self.label_names:
                    raise KeyError(f"Identity {identity!r} is not in this generator's label space {self.label_names}")
                labels.append(self.label_names.index(identity))
            else:
                if not 0 <= int(identity) < self.num_classes:
                    raise KeyError(f"Label {identity} is outside this generator's {self.num_classes} identities")
                labels.append(int(identity))
        return torch.tensor(labels, dtype=torch.long)

    # -- latent <-> image -------------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Images in [-1, 1] -> model space (identity in pixel space, scaled VAE latents otherwise).

        ``deterministic`` takes the VAE posterior's mode instead of a sample (reference starts: a seed fixes them).
        """
        if self.vae is None:
            return images
        posterior = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        latents = posterior.mode() if deterministic else posterior.sample()
        return latents * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model space -> images in [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        latents = (latents / self.vae.config.scaling_factor).to(self.vae.dtype)
        return self.vae.decode(latents).sample.clamp(-1, 1)

    # -- model calls ------------------------------------------------------------------------------------------
    def model_output(self, latents: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The transformer's prediction (epsilon or v), dropping a learned-variance half if the model has one."""
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(latents.shape[0])
        # DDIM steps compute in float32 (the scheduler's alphas are float32); a bf16/fp16 transformer gets its own
        # dtype here, on the sampling and the training-time recomputation paths alike.
        latents = latents.to(self.dtype)
        output = self.transformer(latents, timestep=timesteps, class_labels=labels).sample
        channels = latents.shape[1]
        return output[:, :channels] if output.shape[1] == 2 * channels else output

    def guided_output(
        self, latents: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor, guidance_scale: float
    ) -> torch.Tensor:
        """Classifier-free guidance with the package's one convention (see ``generators.sampling``)."""
        if not uses_guidance(guidance_scale):
            return self.model_output(latents, timestep, labels)
        null = torch.full_like(labels, self.null_label)
        return classifier_free_guidance(self.model_output, latents, timestep, labels, null, guidance_scale)

    def denoising_loss(
        self, images: torch.Tensor, labels: torch.Tensor, p_uncond: float = 0.1, min_snr_gamma: float | None = None
    ) -> torch.Tensor:
        """Diffusion loss on real images, labels replaced by the null id per sample with probability ``p_uncond``.

        ``min_snr_gamma`` weights timesteps by min-SNR (Hang et al. 2023), which converges faster on small data.
        """
        latents = self.encode(images)
        noise = torch.randn_like(latents)
        scheduler = self.scheduler
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
        drop = torch.rand(labels.shape[0], device=labels.device) < p_uncond
        labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction_type = scheduler.config.prediction_type
        if prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        elif prediction_type == "epsilon":
            target = noise
        else:
            target = latents
        error = (self.model_output(noisy, timesteps, labels).float() - target.float()).pow(2)
        error = error.mean(dim=tuple(range(1, error.ndim)))
        if min_snr_gamma is None:
            return error.mean()
        return (error * min_snr_weights(scheduler, timesteps, min_snr_gamma)).mean()

    # -- sampling ---------------------------------------------------------------------------------------------
    def mixed_precision_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the transformer's half dtype when its weights mix half and full precision, else nothing.

        A policy trained under mixed precision keeps a bf16 (or fp16) backbone and float32 trainable weights (LoRA,
        identity embedders), as TRL's ``DDPOTrainer`` leaves it; outside autocast their matrix products would meet
        two dtypes. Sampling it under its own autocast computes what its training-time forward computed.
        """
        dtypes = {p.dtype for p in self.transformer.parameters() if p.is_floating_point()}
        half = sorted(dtypes & {torch.bfloat16, torch.float16}, key=str)
        if not half or len(dtypes) == 1:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=half[0])

    def _ddim(self, labels: torch.Tensor, **options):
        """The shared guided DDIM sampler on this generator: its denoiser, scheduler, null class, shape and dtype."""
        null = torch.full_like(labels, self.null_label)
        with self.mixed_precision_autocast():
            return ddim_sample(
                self.model_output,
                self.scheduler,
                labels,
                null,
                self.latent_shape,
                device=self.device,
                dtype=self.dtype,
                **options,
            )

    def trajectory(
        self,
        labels: torch.Tensor,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.5,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        with_log_probs: bool = False,
        progress: bool = False,
    ) -> SampleTrajectory:
        """Run the shared DDIM sampler (``generators.sampling.ddim_sample``): a float32 chain, the model's dtype."""
        labels = labels.to(self.device)
        result = self._ddim(
            labels,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            eta=eta,
            generator=generator,
            return_chain=True,
            return_log_probs=with_log_probs,
            progress=progress,
        )
        return SampleTrajectory(
            images=self.decode(result.latents),
            latents=torch.stack(result.chain, dim=1),
            log_probs=torch.stack(result.log_probs, dim=1) if with_log_probs else torch.empty(labels.shape[0], 0),
            timesteps=result.timesteps,
        )

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor | Sequence[str | int],
        *,
        seed: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.5,
        guidance_interval: tuple[float, float] | None = None,
        eta: float = 0.0,
        batch_size: int = 256,
        progress: bool = False,
        reference: ReferenceStart | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1] for the given identity labels; the same seed gives the same images.

        ``reference`` starts each sample from one of its identity's real images noised to the drawn strength
        (:mod:`.reference`); the draws come from ``seed`` too, made for all labels before any batch. LoRA updates are
        folded into the weights while sampling and the exact weights restored after (:mod:`.lora_merge`).
        """
        if not isinstance(labels, torch.Tensor):
            labels = self.labels_for(labels)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise KeyError(f"Labels must lie in [0, {self.num_classes}); got {labels.tolist()}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        draw = None
        if reference is not None:
            draw = reference.draw(labels, num_inference_steps, reference_rng(seed))
        was_training = self.transformer.training
        self.transformer.eval()
        outputs = []
        with merged_lora(self.transformer):
            for start in range(0, len(labels), batch_size):
                chunk = labels[start : start + batch_size].to(self.device)
                starts = {} if draw is None else reference.starts(self, draw, slice(start, start + batch_size))
                result = self._ddim(
                    chunk,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    guidance_interval=guidance_interval,
                    eta=eta,
                    generator=generator,
                    progress=progress,
                    **starts,
                )
                outputs.append(self.decode(result.latents))
        self.transformer.train(was_training)
        return torch.cat(outputs)

    # -- persistence ------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the diffusers folder layout; ``model_index.json`` also records the identity names."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(directory / "transformer")
        self.scheduler.save_pretrained(directory / "scheduler")
        index = {
            "_class_name": "DiTPipeline",
            "transformer": ["diffusers", "DiTTransformer2DModel"],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "id2label": {str(i): name for i, name in enumerate(self.label_names)},
            "resolution": self.resolution,
        }
        if self.vae is not None:
            self.vae.save_pretrained(directory / "vae")
            index["vae"] = ["diffusers", "AutoencoderKL"]
        atomic_write_json(directory / MODEL_INDEX, index)

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | os.PathLike, revision: str | None = None, torch_dtype: torch.dtype | None = None
    ) -> IdentityGenerator:
        """A base generator folder, an identity-adapter folder, a Hub id (e.g. ``facebook/DiT-XL-2-256``) or an
        embedded id; offline it uses the HF cache. Delegates to :func:`~rlsyn_trl.generators.loading.load_generator`.
        """
        return load_generator(path_or_id, revision, torch_dtype)


def load_base_generator(
    folder: str | os.PathLike, torch_dtype: torch.dtype | None = None, source: str | None = None
) -> IdentityGenerator:
    """A generator from a resolved base DiT folder (``transformer/``, ``scheduler/``, optional ``vae/``)."""
    folder = Path(folder)
    if not (folder / "transformer").is_dir():
        raise FileNotFoundError(f"{folder} has no transformer/ subfolder: not a DiT generator folder.")
    index = json.loads((folder / MODEL_INDEX).read_text()) if (folder / MODEL_INDEX).is_file() else {}
    transformer = DiTTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=torch_dtype)
    disable_label_dropout(transformer)
    # facebook/DiT-XL-2-256 ships DDIM with "leading" spacing and set_alpha_to_one=True: its last step (t=0)
    # has zero variance, so DDPO's step log-probabilities are NaN there. Trailing spacing (starting from pure
    # noise) ending on the first training alpha, as default_scheduler() does, keeps every step stochastic.
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler", timestep_spacing="trailing", set_alpha_to_one=False)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch_dtype) if (folder / "vae").is_dir() else None
    id2label = index.get("id2label") or {}
    num_classes = transformer.config.num_embeds_ada_norm
    label_names = [id2label.get(str(i), str(i)) for i in range(num_classes)]
    return IdentityGenerator(
        transformer, scheduler, label_names, vae=vae, resolution=index.get("resolution"), source=source or str(folder)
    )


register_folder_loader(GENERATOR_KIND, load_base_generator)
