"""A ``DDPOStableDiffusionPipeline`` view of the class-conditional DiT, so TRL's ``DDPOTrainer`` can drive it.

``DDPOTrainer`` speaks Stable Diffusion: it tokenizes prompts, embeds them with a text encoder and calls a UNet with
``(latents, timesteps, prompt embeddings)``. Here a prompt is an identity name, its single "token" the integer label
and its "embedding" that label shaped ``[B, 1, 1]`` (so the trainer's ``repeat``/``cat``/``reshape`` calls keep
working); the empty prompt is the null class, the unconditional branch of classifier-free guidance. The "UNet" is
the DiT transformer behind a label-conditioned call, and sampling is DDIM with TRL's log-probability step, so the
stock trainer and :class:`~rlsyn_trl.trainers.ddpo.trainer.RLSynDDPOTrainer` run the same pipeline unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import extract_model_from_parallel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from peft import LoraConfig
from safetensors.torch import load_file, save_file
from trl import DDPOStableDiffusionPipeline
from trl.models.modeling_sd_base import DDPOPipelineOutput, DDPOSchedulerOutput

from ...data.preprocessing import to_unit_range
from ...generators import IdentityGenerator
from ...generators.adapter import (
    LORA_ADAPTER_NAME,
    add_lora,
    freeze_backbone,
    has_lora,
    read_adapter_config,
    save_adapter,
)
from ...generators.lora_merge import merged_lora
from ...generators.sampling import classifier_free_guidance, ddim_sample, log_prob_step
from ...utils.model_sources import adapter_config_path, resolve_pretrained_folder

NULL_PROMPT = ""
TRAINABLE_FILE = "trainable_weights.safetensors"


def label_embeds(labels: torch.Tensor) -> torch.Tensor:
    """Integer labels ``[B]`` -> the ``[B, 1, 1]`` "prompt embeddings" DDPOTrainer carries around."""
    return labels.long().reshape(-1, 1, 1)


def embeds_to_labels(embeds: torch.Tensor) -> torch.Tensor:
    return embeds.reshape(-1).long()


@dataclass
class LabelIds:
    """What the tokenizer returns: DDPOTrainer reads ``.input_ids``."""

    input_ids: torch.Tensor


class LabelTokenizer:
    """Identity names -> label ids, one token per prompt; the empty prompt is the null (unconditional) class."""

    model_max_length = 1

    def __init__(self, label_names: Sequence[str], null_label: int):
        self.label_names = list(label_names)
        self.null_label = null_label
        self._ids = {name: index for index, name in enumerate(self.label_names)} | {NULL_PROMPT: null_label}

    def __call__(self, prompts: str | Sequence[str], **_tokenizer_kwargs) -> LabelIds:
        """Hugging Face tokenizer keywords (padding, truncation, max_length, ...) mean nothing for one-token prompts."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        unknown = [prompt for prompt in prompts if prompt not in self._ids]
        if unknown:
            raise KeyError(f"Prompts {unknown} are not identities of this generator ({self.label_names})")
        return LabelIds(torch.tensor([[self._ids[prompt]] for prompt in prompts], dtype=torch.long))

    def batch_decode(self, ids, skip_special_tokens: bool = True) -> list[str]:
        names = [*self.label_names, NULL_PROMPT]
        return [names[int(row[0])] for row in torch.as_tensor(ids).reshape(-1, 1)]


class LabelEmbedder(torch.nn.Module):
    """The "text encoder": label ids ``[B, 1]`` -> ``([B, 1, 1],)``; the DiT embeds labels itself."""

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor]:
        return (label_embeds(input_ids),)


class LabelConditionedDenoiser(torch.nn.Module):
    """The "UNet": ``(latents, timesteps, label embeds) -> .sample``, the call DDPOTrainer makes.

    The transformer is a submodule, so wrapping this module (DDP) wraps every trainable weight.
    """

    def __init__(self, generator: IdentityGenerator):
        super().__init__()
        self.transformer = generator.transformer
        self._generator = generator

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> Transformer2DModelOutput:
        labels = embeds_to_labels(encoder_hidden_states).to(sample.device)
        return Transformer2DModelOutput(sample=self._generator.model_output(sample, timestep, labels))


def guided_prediction(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    embeds: torch.Tensor,
    negative_embeds: torch.Tensor,
    guidance_scale: float,
    cfg: bool,
) -> torch.Tensor:
    """The guided prediction of a "UNet" call, with the package's one guidance rule (``generators.sampling``).

    The pipeline samples through the same rule and the trainer's loss and KL reference recompute through this
    function, so the training pass reproduces the sampler's log-probabilities (up to the float rounding of the LoRA
    merged while sampling a float32 policy; a half-precision backbone samples unmerged, as it trains): the PPO ratio
    starts at 1.
    """
    if not cfg:
        return unet(latents, timesteps, embeds).sample
    return classifier_free_guidance(
        lambda x, t, c: unet(x, t, c).sample, latents, timesteps, embeds, negative_embeds, guidance_scale
    )


class IdentityDDPOPipeline(DDPOStableDiffusionPipeline):
    """Lets ``DDPOTrainer`` (stock or :class:`RLSynDDPOTrainer`) train an :class:`IdentityGenerator`.

    Trainable: the generator's LoRA (continued if it has one, else injected with ``lora_config``; none when both
    are absent) and every block's identity embedder. ``base_model``/``base_revision`` are what the saved adapter
    records, so ``IdentityGenerator.from_pretrained(saved_folder)`` rebuilds the trained generator.
    """

    def __init__(
        self,
        generator: IdentityGenerator,
        base_model: str,
        base_revision: str | None = None,
        lora_config: LoraConfig | None = None,
    ):
        if not has_lora(generator) and lora_config is not None:
            add_lora(generator, lora_config)
        freeze_backbone(generator)
        self.generator = generator
        self.base_model = base_model
        self.base_revision = base_revision
        self.lora_config = generator.transformer.peft_config[LORA_ADAPTER_NAME] if has_lora(generator) else None
        self._denoiser = LabelConditionedDenoiser(generator)
        self._training_unet: torch.nn.Module | None = None
        self._tokenizer = LabelTokenizer(generator.label_names, generator.null_label)
        self._text_encoder = LabelEmbedder()
        # DDPOTrainer moves `vae` to the device; a pixel-space generator has none, so it gets a weightless stand-in.
        self._vae = generator.vae if generator.vae is not None else torch.nn.Identity()

    @classmethod
    def from_pretrained(
        cls, path_or_id: str, revision: str | None = None, lora_config: LoraConfig | None = None
    ) -> IdentityDDPOPipeline:
        """From a cold-start adapter (the saved RL adapter then records the adapter's own base) or a generator."""
        generator = IdentityGenerator.from_pretrained(path_or_id, revision)
        folder = resolve_pretrained_folder(path_or_id, revision)
        if adapter_config_path(folder) is not None:
            adapter = read_adapter_config(folder)
            return cls(generator, adapter["base_model"], adapter.get("base_revision"), lora_config)
        return cls(generator, str(path_or_id), revision, lora_config)

    # -- the DDPOStableDiffusionPipeline interface ---------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        eta: float = 1.0,
        output_type: str = "pt",
        generator: torch.Generator | list[torch.Generator] | None = None,
        init_latents: torch.Tensor | None = None,
        start_steps: torch.Tensor | None = None,
    ) -> DDPOPipelineOutput:
        """Sample with log-probabilities: images in [0, 1], the T + 1 latents and the T step log-probs.

        ``generator`` may be one generator per sample, which makes each sample's noise independent of how the
        epoch is split into batches and processes. ``init_latents`` and ``start_steps`` start each sample from a
        noised reference (``generators.sampling``): its latents hold and its log-probs are 0 before its start step.
        """
        if output_type != "pt":
            raise ValueError(f"IdentityDDPOPipeline returns tensors only (output_type='pt'), got {output_type!r}")
        labels = embeds_to_labels(prompt_embeds)
        if negative_prompt_embeds is None:
            negative_prompt_embeds = label_embeds(torch.full_like(labels, self.generator.null_label))
        with merged_lora(self.generator.transformer):
            result = ddim_sample(
                lambda x, t, c: self._denoiser(x, t, c).sample,
                self.scheduler,
                prompt_embeds,
                negative_prompt_embeds,
                self.generator.latent_shape,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                eta=eta,
                generator=generator,
                device=self.generator.device,
                dtype=self.generator.dtype,
                return_chain=True,
                return_log_probs=True,
                init_latents=init_latents,
                start_steps=start_steps,
            )
        images = to_unit_range(self.generator.decode(result.latents))
        return DDPOPipelineOutput(images, result.chain, result.log_probs)

    def scheduler_step(self, *args, **kwargs) -> DDPOSchedulerOutput:
        """TRL's step with log-probability, in float32 outside autocast: the one the sampler takes."""
        return log_prob_step(self.scheduler, *args, **kwargs)

    @property
    def unet(self) -> torch.nn.Module:
        """The denoiser the trainer trains: the prepared (e.g. DDP-wrapped) one once installed, so gradients sync."""
        return self._training_unet if self._training_unet is not None else self._denoiser

    @unet.setter
    def unet(self, module: torch.nn.Module) -> None:
        if extract_model_from_parallel(module) is not self._denoiser:
            raise ValueError("Only a wrapper of this pipeline's own denoiser can be installed as its unet")
        self._training_unet = module

    @property
    def vae(self) -> torch.nn.Module:
        return self._vae

    @property
    def tokenizer(self) -> LabelTokenizer:
        return self._tokenizer

    @property
    def scheduler(self):
        return self.generator.scheduler

    @property
    def text_encoder(self) -> LabelEmbedder:
        return self._text_encoder

    @property
    def autocast(self) -> None:
        """None: DDPOTrainer then uses ``accelerator.autocast``, which honours ``mixed_precision``."""
        return None

    def set_progress_bar_config(self, *args, **kwargs) -> None:
        """Sampling runs a handful of steps and shows no per-step bar; accepted for the DDPOTrainer interface."""

    def get_trainable_layers(self) -> torch.nn.Module:
        """The denoiser, with trainable weights kept in float32 (the trainer may cast the rest to half precision)."""
        for parameter in self._denoiser.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        return self._denoiser

    def save_pretrained(
        self, output_dir: str | os.PathLike, card: str | None = None, extra: dict | None = None
    ) -> Path:
        """An identity-adapter folder that ``IdentityGenerator.from_pretrained`` loads like a cold-start adapter."""
        return save_adapter(
            self.generator, output_dir, self.base_model, self.base_revision, self.lora_config, card=card, extra=extra
        )

    def save_checkpoint(self, models: list[torch.nn.Module], weights: list, output_dir: str) -> None:
        """accelerate's save hook: only the trainable tensors (the frozen backbone never changes)."""
        if PartialState().is_main_process:
            model = extract_model_from_parallel(models[0])
            state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(state, os.path.join(output_dir, TRAINABLE_FILE))

    def load_checkpoint(self, models: list[torch.nn.Module], input_dir: str) -> None:
        """accelerate's load hook: restore the trainable tensors written by :meth:`save_checkpoint`."""
        model = extract_model_from_parallel(models[0])
        state = load_file(os.path.join(input_dir, TRAINABLE_FILE))
        parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(parameters) - set(state)), sorted(set(state) - set(parameters))
        if missing or unexpected:
            raise ValueError(
                f"The checkpoint in {input_dir} holds other trainable tensors than this run (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}): was it written with another LoRA rank or target list?"
            )
        with torch.no_grad():
            for name, parameter in parameters.items():
                parameter.copy_(state[name])
