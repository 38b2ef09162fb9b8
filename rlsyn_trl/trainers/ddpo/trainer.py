"""Stage 2, reward-guided RL: TRL's ``DDPOTrainer`` subclassed for identity groups and the composite reward.

What changes against the stock trainer, and why (docs/method.md, stage 2):

- Samples come in identity GROUPS (:mod:`.identity_groups`), because the coverage and expression terms are
  set-level; the composite reward is computed once over the WHOLE epoch, gathered across processes (the stock
  trainer scores each sample batch on its own), and advantages are per-identity (each sample against its own
  group's mean).
- Each sample's noise is seeded by (seed, epoch, sample index), so an epoch draws the same samples whatever the
  number of processes, and a resumed run redraws exactly what an uninterrupted one would.
- An optional anchor keeps the policy near the data: ``kl_coef`` penalises the KL between the policy's and the
  cold-start policy's DDIM step distributions, ``denoise_coef`` adds the cold-start denoising loss on the real
  training images. Self-training without an anchor lowered identity consistency every round.
- Checkpoints resume exactly. The settings live in :mod:`.config`, the real images and reward of a config in
  :mod:`.data`, saving and pushing the adapter in :mod:`.publishing`, the JSONL metrics and PNG sample
  grids in :mod:`.logs`, the final cold-start vs RL comparison in :mod:`.evaluation`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm
from trl import DDPOTrainer

from ...generators.lora_merge import mergeable_lora_layers
from ...generators.reference import ReferenceStart, reference_rng
from ...generators.sampling import broken_samples
from ...rewards.identity_reward import IdentityReward, reward_summary
from ...utils.io import atomic_write_json
from ...utils.log_filters import CHECKPOINT_LOGGERS, quiet_logger
from ...utils.runtime import claim_process_precision
from ...utils.tracking import build_trackers
from ...utils.visualization import save_curves
from ..cold_start import ColdStartConfig
from ..training import check_data_parallel, check_resume, require_finite, require_working_samples
from .config import RLSynDDPOConfig, epoch_layout, process_state
from .identity_groups import epoch_identities, identity_advantages, identity_prompt_fn, sample_seed
from .logs import STOCK_LOGGER, JsonlTracker, SampleGridWriter, epoch_line, log_grid_image
from .pipeline import IdentityDDPOPipeline, LabelConditionedDenoiser, guided_prediction, label_embeds
from .publishing import TRAINER_STATE, AdapterPublishingMixin, latest_checkpoint

logger = logging.getLogger(__name__)

PER_TIMESTEP_KEYS = ("timesteps", "latents", "next_latents", "log_probs", "ref_log_probs")
MEMORY_BANK_FILE = "memory_bank.safetensors"
# Adapters without provenance (made before it was recorded, or by hand): the cold start's own defaults.
DEFAULT_DENOISING = {"p_uncond": ColdStartConfig.p_uncond, "min_snr_gamma": ColdStartConfig.min_snr_gamma}


class RLSynDDPOTrainer(AdapterPublishingMixin, DDPOTrainer):
    """DDPO on identity groups with the epoch-level composite identity reward (see the module docstring).

    It receives its ``pipeline`` (the cold-start adapter as a DDPO pipeline), its ``reward`` (phi + the memory bank
    of the real training images) and ``train_data`` (those images in ``[-1, 1]`` and their labels, for the
    denoising anchor); ``denoising`` holds the cold start's ``p_uncond`` and ``min_snr_gamma`` (from the adapter's
    provenance) so the anchor is the objective the adapter was trained with.
    """

    _tag_names = ["trl", "ddpo", "rlsyn-trl"]

    def __init__(
        self,
        config: RLSynDDPOConfig,
        pipeline: IdentityDDPOPipeline,
        reward: IdentityReward,
        train_data: tuple[torch.Tensor, torch.Tensor],
        denoising: dict | None = None,
        image_samples_hook: Callable | None = None,
    ):
        state = process_state(config)
        check_data_parallel(state)
        generator = pipeline.generator
        batches = epoch_layout(config, state.num_processes, generator.num_classes)
        self.denoising = {**DEFAULT_DENOISING, **(denoising or {})}
        self.reward = reward
        self.train_images, self.train_labels = train_data
        output = Path(config.output_dir)
        self.metrics_tracker = JsonlTracker(output / "logs" / "metrics.jsonl")
        named = build_trackers(config.log_with, config.tracker_project_name, output / "logs")
        trackers = [self.metrics_tracker, *named]
        hook = image_samples_hook or SampleGridWriter(
            output / "samples", config.samples_per_identity, config.grid_identities
        )
        # The stock resume assumes its own checkpoint naming and restarts at global step 0: it is done here instead.
        stock_config = dataclasses.replace(
            config,
            resume_from="",
            sample_num_batches_per_epoch=batches,
            log_with=trackers,
            mixed_precision=claim_process_precision(config.mixed_precision),
        )
        with quiet_logger(STOCK_LOGGER):  # the stock __init__ logs its whole config (~2,000 characters) at INFO
            super().__init__(
                stock_config,
                self.reward,
                identity_prompt_fn(generator.label_names, config.samples_per_identity, config.seed),
                pipeline,
                hook,
            )
        self.sd_pipeline.unet = self.trainable_layers  # the prepared (DDP) module: gradients stay in sync
        self.num_train_timesteps = config.trained_timesteps()  # with reference starts: of the shortest chain
        self.accelerator.gradient_accumulation_steps = (
            config.train_gradient_accumulation_steps * self.num_train_timesteps
        )
        device = self.accelerator.device
        self.reward.encoder.to(device)
        self.train_images, self.train_labels = self.train_images.to(device), self.train_labels.to(device)
        strength = config.reference_range()
        self.reference_start = (
            None if strength is None else ReferenceStart(self.train_images, self.train_labels, strength)
        )
        self.reference = self._reference_policy() if config.kl_coef > 0 else None
        self.first_epoch, self.global_step, self.history, self.record = 0, 0, [], config.resume_record()
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
        for layer in mergeable_lora_layers(reference.transformer):
            layer.merge()  # frozen for good: one matmul per layer instead of three (bf16 bases stay unmerged)
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
            starts = self._reference_starts(epoch, indices, labels[start : indices.stop])
            with self.autocast():
                output = pipeline(
                    prompt_embeds=embeds,
                    negative_prompt_embeds=negative,
                    num_inference_steps=self.config.sample_num_steps,
                    guidance_scale=self.config.sample_guidance_scale,
                    eta=self.config.sample_eta,
                    generator=generators,
                    **starts,
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
            if starts:
                batch["start_steps"] = starts["start_steps"]
            if self.reference is not None:
                batch["ref_log_probs"] = self._reference_log_probs(batch)
            batches.append(batch)
            images.append(output.images)
        return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}, torch.cat(images)

    def _reference_starts(self, epoch: int, indices: range, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reference-guided starts of one sample batch (empty without ``reference_strength``); each sample's strength
        and real image are drawn from (seed, epoch, sample index) alone, like its noise."""
        if self.reference_start is None:
            return {}
        rngs = [reference_rng(self.config.seed, epoch, i) for i in indices]
        draw = self.reference_start.draw(labels, self.config.sample_num_steps, rngs)
        starts = self.reference_start.starts(self.sd_pipeline.generator, draw)
        return {**starts, "start_steps": starts["start_steps"].to(self.accelerator.device)}

    def _reference_log_probs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p_ref of every sampled step under the cold-start policy, ``[B, T]``.

        The taken (latent, timestep) pairs go through in chunks of ``train_batch_size`` rows, the size of a training
        forward, so the gradient-free reference pass never needs more memory than training does. Steps before a
        sample's reference start were not taken: they stay 0 and are never trained.
        """
        size, steps = batch["timesteps"].shape
        taken = torch.ones(size, steps, dtype=torch.bool, device=batch["timesteps"].device)
        if "start_steps" in batch:
            taken = torch.arange(steps, device=taken.device)[None, :] >= batch["start_steps"][:, None]
        rows = taken.flatten()

        def flat(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.flatten(0, 1)[rows]

        def per_step(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.repeat_interleave(steps, dim=0)[rows]

        pairs = {
            "latents": flat(batch["latents"]),
            "timesteps": flat(batch["timesteps"]),
            "next_latents": flat(batch["next_latents"]),
            "embeds": per_step(batch["prompt_embeds"]),
            "negative": per_step(batch["negative_prompt_embeds"]),
        }
        chunk = self.config.train_batch_size
        log_probs = []
        for start in range(0, len(pairs["latents"]), chunk):
            part = {key: value[start : start + chunk] for key, value in pairs.items()}
            with self.autocast():
                output = guided_prediction(
                    self.reference,
                    part["latents"],
                    part["timesteps"],
                    part["embeds"],
                    part["negative"],
                    self.config.sample_guidance_scale,
                    cfg=self.config.train_cfg,
                )
            step = self.sd_pipeline.scheduler_step(
                output, part["timesteps"], part["latents"], eta=self.config.sample_eta,
                prev_sample=part["next_latents"],
            )  # fmt: skip
            log_probs.append(step.log_probs)
        taken_log_probs = torch.cat(log_probs)
        if bool(rows.all()):
            return taken_log_probs.view(size, steps)
        full = torch.zeros(size * steps, dtype=taken_log_probs.dtype, device=taken_log_probs.device)
        return full.masked_scatter(rows, taken_log_probs).view(size, steps)

    def _score_epoch(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """Encode locally, gather features and labels of all processes, score the whole epoch once (every rank)."""
        advice = f"The last update broke the policy; lower train_learning_rate ({self.config.train_learning_rate:g})"
        require_working_samples(self.accelerator.gather(broken_samples(images)), "DDPO samples", advice + ".")
        features = self.accelerator.gather(self.reward.features(images))
        gathered = self.accelerator.gather(labels.to(features.device))
        return {**self.reward.score(features, gathered), "labels": gathered}

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
            grid = self.image_samples_callback([entry], global_step, tracker)
            if isinstance(grid, Path):  # the default hook's PNG: also shown in the trackers that take images
                log_grid_image(self.accelerator.trackers, grid, global_step)
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
        advice = f"Lower train_learning_rate ({self.config.train_learning_rate:g}); nothing of this epoch was saved."
        require_finite(record, self.sd_pipeline.unet, f"DDPO epoch {epoch + 1}", advice)
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
            if "start_steps" in samples:  # each sample's own trainable steps, from its start step on
                trained = self.num_train_timesteps
                perms = torch.stack([
                    first + torch.randperm(num_timesteps - first, device=device)[:trained]
                    for first in samples["start_steps"].tolist()
                ])  # fmt: skip
            else:
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

    def policy_log_probs(self, sample: dict[str, torch.Tensor], j: int) -> torch.Tensor:
        """log p_theta of the sampled step in column ``j``, recomputed as the sampler computed it (its autocast, the
        step in float32): before any update it equals ``log_probs[:, j]``, so the PPO ratio is 1 in fp32 and bf16."""
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
        return self.sd_pipeline.scheduler_step(
            output, timesteps, latents, eta=self.config.sample_eta, prev_sample=sample["next_latents"][:, j]
        ).log_probs

    def _loss_terms(self, sample: dict[str, torch.Tensor], j: int) -> dict[str, torch.Tensor]:
        """The stock PPO loss for timestep column ``j``, plus the KL and denoising anchors when weighted."""
        log_prob = self.policy_log_probs(sample, j)
        latents = sample["latents"][:, j]
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
                self.denoising["p_uncond"],
                self.denoising["min_snr_gamma"],
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
        progress = tqdm(
            total=epochs,
            initial=self.first_epoch,
            desc="ddpo",
            unit="epoch",
            disable=not self.accelerator.is_local_main_process,
        )
        for epoch in range(self.first_epoch, epochs):
            epoch_started = time.perf_counter()
            self.global_step = self.step(epoch, self.global_step)
            self.first_epoch = epoch + 1
            now = time.perf_counter()
            progress.update(1)
            if self.accelerator.is_main_process:
                logger.info(epoch_line(self.history[-1], epochs))
            overrun = budget is not None and now - started + (now - epoch_started) > budget
            # Every process must take the same decision, or one would wait for the others forever.
            overrun = bool(self.accelerator.gather(torch.tensor([overrun], device=self.accelerator.device)).any())
            if overrun and epoch + 1 < epochs:
                logger.info("Stopping after epoch %d: another epoch would exceed %s minutes", epoch + 1, budget / 60)
                if (epoch + 1) % self.config.save_freq:
                    self.save_checkpoint(epoch + 1, self.global_step)
                break
        progress.close()
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
        with quiet_logger(*CHECKPOINT_LOGGERS):
            self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            state = {"epoch": epochs_done, "global_step": global_step, "history": self.history, "run": self.record}
            atomic_write_json(folder / TRAINER_STATE, state)
            checkpoints = sorted(root.glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
            for old in checkpoints[: -self.config.num_checkpoint_limit]:
                shutil.rmtree(old, ignore_errors=True)
            self.write_reward_curves()
        self.accelerator.wait_for_everyone()
        return folder

    def _resume(self, path: str | os.PathLike) -> None:
        folder = latest_checkpoint(path)
        state = json.loads((folder / TRAINER_STATE).read_text())
        check_resume(state.get("run"), self.record, folder)  # another adapter or split: refused, not mixed
        with quiet_logger(*CHECKPOINT_LOGGERS):
            self.accelerator.load_state(str(folder))
        self.first_epoch, self.global_step, self.history = state["epoch"], state["global_step"], state["history"]
        if self.accelerator.is_main_process:  # the epochs after the checkpoint are trained, and logged, again
            self.metrics_tracker.drop_epochs_from(self.first_epoch)
        logger.info("Resumed DDPO from %s (epoch %d)", folder, self.first_epoch)
