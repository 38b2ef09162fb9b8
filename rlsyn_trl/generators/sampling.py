"""The one DDIM sampler with classifier-free guidance, and the guidance rule every caller shares.

Dataset generation, preview grids, evaluation and DDPO's rollouts all sample through :func:`ddim_sample`, and DDPO's
loss and KL reference recompute step log-probabilities through :func:`classifier_free_guidance` and TRL's
``scheduler_step``. Keeping one guidance rule and one step function matters because DDPO's importance ratio compares
the log-probabilities recorded while sampling with those recomputed while training: any difference in how the two
batch the conditional and unconditional passes (or in the step) shows up as a ratio away from 1 before any update.

Reference-guided starts (SDEdit): ``start_steps`` skips each sample's first steps of the schedule, and the sample
starts from its clean ``init_latents`` noised to the first step it runs (the scheduler's ``add_noise`` with the very
noise a pure-noise start would have used). A sample with start step 0 starts from that noise itself, so strength 1
is the pure-noise chain, bit for bit. :func:`start_step` maps a strength to the start step as diffusers' image-to-image
pipelines do.

Precision: the chain and every step run in float32 whatever the model's precision. Under bf16 the model's prediction
is bf16, and TRL's step computed ``-(x - mu)^2 / 2 sigma^2`` in it: the log-probability recorded while sampling and
the one recomputed for the same step while training differed by up to 0.03, so DDPO's clipped ratio measured
rounding. :func:`log_prob_step` casts the prediction up and runs the step outside autocast; the chain (noise
included) is float32, so the next latents that training reads back are the very numbers the step produced.

Guidance convention: one forward pass over ``[null; cond]`` (the order of TRL's ``DDPOTrainer.calculate_loss``, so
the stock trainer recomputes the same numbers), combined as ``null + g * (cond - null)``. A scale of exactly 1 is the
conditional prediction alone, computed without the null pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from trl.core import randn_tensor
from trl.models.modeling_sd_base import scheduler_step

# (latents, timesteps, conditioning) -> the model's prediction (epsilon or v)
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 unless it already is float32 or float64."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def broken_samples(images: torch.Tensor) -> torch.Tensor:
    """Per sample: NaN/infinite, or one flat colour. Either means a diverged model: a NaN image is written as a black
    square, which passes a memorisation audit (it is far from every real photo), and no diffusion sample of a working
    model is exactly constant."""
    flat = images.flatten(1)
    return ~torch.isfinite(flat).all(dim=1) | (flat.amax(dim=1) == flat.amin(dim=1))


def classifier_free_guidance(
    denoise: Denoiser,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """``null + g * (cond - null)``, both branches in one forward pass batched as ``[null; cond]``.

    The combination is float32 whatever dtype the model returns: under autocast a policy (float32 trainable weights
    in its last layers) and its frozen KL reference return the same numbers in float32 and bf16 respectively.
    """
    both_t = timesteps if timesteps.ndim == 0 else torch.cat([timesteps, timesteps])
    output = full_precision(denoise(torch.cat([latents, latents]), both_t, torch.cat([null, cond])))
    unconditional, conditional = output.chunk(2)
    return unconditional + guidance_scale * (conditional - unconditional)


def log_prob_step(
    scheduler,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    sample: torch.Tensor,
    *,
    eta: float = 0.0,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
):
    """TRL's DDIM step with its log-probability, in float32 outside autocast, for sampling and training alike.

    Returns TRL's ``DDPOSchedulerOutput`` (``latents``, ``log_probs``); see the module docstring for why.
    """
    with torch.autocast(sample.device.type, enabled=False):
        return scheduler_step(
            scheduler,
            full_precision(model_output),
            timestep,
            full_precision(sample),
            eta=eta,
            prev_sample=None if prev_sample is None else full_precision(prev_sample),
            generator=generator,
        )


def uses_guidance(guidance_scale: float) -> bool:
    """Scale 1 is the conditional prediction: the sampler then skips the null pass (half the compute)."""
    return guidance_scale != 1.0


def guided_step(
    timestep: torch.Tensor, guidance_interval: tuple[float, float] | None, num_train_timesteps: int
) -> bool:
    """Whether guidance applies at ``timestep``: everywhere without an interval, else where ``lo < t / T <= hi``.

    Guidance in a limited interval of noise levels (Kynkaenniemi et al., 2024); outside it the step is the
    conditional model alone. On the embedded prior it is guidance in the clean half of the chain that costs faces:
    limited to the noisier half it keeps most of them and the identity it adds (docs/results.md).
    """
    if guidance_interval is None:
        return True
    low, high = guidance_interval
    level = float(timestep) / num_train_timesteps
    return low < level <= high


def start_step(strength: float, num_inference_steps: int) -> int:
    """The schedule index a chain of strength ``s`` starts at: the last ``floor(N s)`` of the N steps remain.

    As in diffusers' image-to-image pipelines (``init_timestep = int(N * strength)``); the tolerance keeps float
    products such as 0.58 x 50 = 28.999999999999996 on the step count they denote.
    """
    remaining = min(num_inference_steps, math.floor(num_inference_steps * strength + 1e-9))
    return num_inference_steps - remaining


@dataclass
class DDIMSample:
    """The final latents; with ``return_chain`` the T + 1 latents from noise on, with ``return_log_probs`` T [B].

    With reference starts, a sample's chain holds its starting latent until its ``start_steps`` entry, and its
    log-probabilities before that step are 0 (no step was taken).
    """

    latents: torch.Tensor
    timesteps: torch.Tensor
    chain: list[torch.Tensor] | None = None
    log_probs: list[torch.Tensor] | None = None
    start_steps: torch.Tensor | None = None


def _starting_latents(
    scheduler, noise: torch.Tensor, init_latents: torch.Tensor, start_steps: torch.Tensor
) -> torch.Tensor:
    """Noise where a sample starts at step 0, its clean latent noised to its start step, or the clean latent
    itself where no step remains."""
    timesteps = scheduler.timesteps
    if start_steps.shape != (noise.shape[0],):
        raise ValueError(
            f"start_steps must hold one step per sample ({noise.shape[0]}), got {tuple(start_steps.shape)}"
        )
    if init_latents is None or init_latents.shape != noise.shape:
        shape = None if init_latents is None else tuple(init_latents.shape)
        raise ValueError(f"Reference starts need init_latents of the noise's shape {tuple(noise.shape)}, got {shape}")
    if (start_steps < 0).any() or (start_steps > len(timesteps)).any():
        raise ValueError(f"start_steps must lie in [0, {len(timesteps)}], got {start_steps.tolist()}")
    init_latents = init_latents.to(noise.device, noise.dtype)
    at = timesteps[start_steps.clamp(max=len(timesteps) - 1)]
    noised = scheduler.add_noise(init_latents, noise, at)
    shape = (-1,) + (1,) * (noise.ndim - 1)
    start = start_steps.view(shape)
    return torch.where(start == 0, noise, torch.where(start == len(timesteps), init_latents, noised))


def ddim_sample(
    denoise: Denoiser,
    scheduler,
    cond: torch.Tensor,
    null: torch.Tensor,
    latent_shape: Sequence[int],
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.5,
    guidance_interval: tuple[float, float] | None = None,
    eta: float = 0.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    return_chain: bool = False,
    return_log_probs: bool = False,
    progress: bool = False,
    init_latents: torch.Tensor | None = None,
    start_steps: torch.Tensor | None = None,
) -> DDIMSample:
    """Run DDIM from Gaussian noise under classifier-free guidance.

    ``cond`` and ``null`` are what ``denoise`` takes as conditioning (labels, or DDPO's ``[B, 1, 1]`` label
    "embeddings"), one row per sample. The noise and the chain are float32 (float64 if ``dtype`` is), whatever the
    model's ``dtype``: ``denoise`` casts its input to the model's own dtype. The noise comes from ``generator``: one
    generator for the batch, or a list with one per sample, which makes each sample independent of how a run is
    split into batches. Every step is :func:`log_prob_step`, whether or
    not log-probabilities are returned, so the chain is the same in both cases and the log-probabilities are exactly
    those DDPO recomputes with ``prev_sample`` (with ``eta=0`` the steps are deterministic and log-probs undefined).

    ``start_steps`` (``[B]``, in ``[0, T]``) with ``init_latents`` (the clean reference latents, ``[B, ...]``) start
    each sample at its own step (see the module docstring); a step runs the model only on the samples already
    started, and with a list of generators only theirs draw noise, so each sample's chain is the same whatever its
    batch-mates' starts.

    ``guidance_interval`` ``(lo, hi)`` limits guidance to the steps whose noise level ``t / T`` lies in ``(lo, hi]``
    (:func:`guided_step`); the other steps run the conditional model alone.
    """
    device = torch.device(device) if device is not None else cond.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    chain_dtype = torch.promote_types(dtype or torch.float32, torch.float32)
    latents = randn_tensor((cond.shape[0], *latent_shape), generator=generator, device=device, dtype=chain_dtype)
    if start_steps is not None:
        start_steps = torch.as_tensor(start_steps, dtype=torch.long, device=device)
        latents = _starting_latents(scheduler, latents, init_latents, start_steps)
    chain, log_probs = [latents], []
    steps = scheduler.timesteps
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="sampling", leave=False)
    guided = uses_guidance(guidance_scale)
    num_train_timesteps = scheduler.config.num_train_timesteps

    def run(rows_latents, t, rows_cond, rows_null, rows_generator):
        if guided and guided_step(t, guidance_interval, num_train_timesteps):
            output = classifier_free_guidance(denoise, rows_latents, t, rows_cond, rows_null, guidance_scale)
        else:
            output = denoise(rows_latents, t, rows_cond)
        return log_prob_step(scheduler, output, t, rows_latents, eta=eta, generator=rows_generator)

    for index, t in enumerate(steps):
        active = None if start_steps is None else start_steps <= index
        if active is None or bool(active.all()):
            step = run(latents, t, cond, null, generator)
            latents, step_log_probs = step.latents, step.log_probs
        else:
            rows = active.nonzero().squeeze(1)
            step_log_probs = torch.zeros(latents.shape[0], device=device)
            if len(rows):
                picked = [generator[i] for i in rows.tolist()] if isinstance(generator, list) else generator
                step = run(latents[rows], t, cond[rows], null[rows], picked)
                latents = latents.to(torch.promote_types(latents.dtype, step.latents.dtype))
                latents = latents.index_copy(0, rows, step.latents.to(latents.dtype))
                step_log_probs = step_log_probs.to(step.log_probs.dtype).index_copy(0, rows, step.log_probs)
        if return_chain:
            chain.append(latents)
        if return_log_probs:
            log_probs.append(step_log_probs)
    return DDIMSample(
        latents=latents,
        timesteps=scheduler.timesteps.clone(),
        chain=chain if return_chain else None,
        log_probs=log_probs if return_log_probs else None,
        start_steps=start_steps,
    )
