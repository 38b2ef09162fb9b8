"""The one DDIM sampler with classifier-free guidance, and the guidance rule every caller shares.

Dataset generation, preview grids, evaluation and DDPO's rollouts all sample through :func:`ddim_sample`, and DDPO's
loss and KL reference recompute step log-probabilities through :func:`classifier_free_guidance` and TRL's
``scheduler_step``. Keeping one guidance rule and one step function matters because DDPO's importance ratio compares
the log-probabilities recorded while sampling with those recomputed while training: any difference in how the two
batch the conditional and unconditional passes (or in the step) shows up as a ratio away from 1 before any update.

Guidance convention: one forward pass over ``[null; cond]`` (the order of TRL's ``DDPOTrainer.calculate_loss``, so
the stock trainer recomputes the same numbers), combined as ``null + g * (cond - null)``. A scale of exactly 1 is the
conditional prediction alone, computed without the null pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from trl.core import randn_tensor
from trl.models.modeling_sd_base import scheduler_step

# (latents, timesteps, conditioning) -> the model's prediction (epsilon or v)
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def classifier_free_guidance(
    denoise: Denoiser,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """``null + g * (cond - null)``, both branches in one forward pass batched as ``[null; cond]``."""
    both_t = timesteps if timesteps.ndim == 0 else torch.cat([timesteps, timesteps])
    output = denoise(torch.cat([latents, latents]), both_t, torch.cat([null, cond]))
    unconditional, conditional = output.chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


def uses_guidance(guidance_scale: float) -> bool:
    """Scale 1 is the conditional prediction: the sampler then skips the null pass (half the compute)."""
    return guidance_scale != 1.0


@dataclass
class DDIMSample:
    """The final latents; with ``return_chain`` the T + 1 latents from noise on, with ``return_log_probs`` T [B]."""

    latents: torch.Tensor
    timesteps: torch.Tensor
    chain: list[torch.Tensor] | None = None
    log_probs: list[torch.Tensor] | None = None


def ddim_sample(
    denoise: Denoiser,
    scheduler,
    cond: torch.Tensor,
    null: torch.Tensor,
    latent_shape: Sequence[int],
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.5,
    eta: float = 0.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    return_chain: bool = False,
    return_log_probs: bool = False,
    progress: bool = False,
) -> DDIMSample:
    """Run DDIM from Gaussian noise under classifier-free guidance.

    ``cond`` and ``null`` are what ``denoise`` takes as conditioning (labels, or DDPO's ``[B, 1, 1]`` label
    "embeddings"), one row per sample. The noise has ``dtype`` (the model's, so a bf16 model samples without a dtype
    error) and comes from ``generator``: one generator for the batch, or a list with one per sample, which makes
    each sample independent of how a run is split into batches. Every step is TRL's ``scheduler_step``, whether or
    not log-probabilities are returned, so the chain is the same in both cases and the log-probabilities are exactly
    those DDPO recomputes with ``prev_sample`` (with ``eta=0`` the steps are deterministic and log-probs undefined).
    """
    device = torch.device(device) if device is not None else cond.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    latents = randn_tensor((cond.shape[0], *latent_shape), generator=generator, device=device, dtype=dtype)
    chain, log_probs = [latents], []
    steps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False)
    guided = uses_guidance(guidance_scale)
    for t in steps:
        if guided:
            output = classifier_free_guidance(denoise, latents, t, cond, null, guidance_scale)
        else:
            output = denoise(latents, t, cond)
        step = scheduler_step(scheduler, output, t, latents, eta=eta, generator=generator)
        latents = step.latents
        if return_chain:
            chain.append(latents)
        if return_log_probs:
            log_probs.append(step.log_probs)
    return DDIMSample(
        latents=latents,
        timesteps=scheduler.timesteps.clone(),
        chain=chain if return_chain else None,
        log_probs=log_probs if return_log_probs else None,
    )
