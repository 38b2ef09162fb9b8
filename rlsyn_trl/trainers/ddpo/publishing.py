"""Saving and publishing a DDPO policy: the adapter folder, its card, the private Hub push, its checkpoints.

A mixin of :class:`~rlsyn_trl.trainers.ddpo.trainer.RLSynDDPOTrainer`, kept apart so the trainer's module holds the
training loop alone; it reads the trainer's ``config``, ``accelerator``, ``sd_pipeline``, ``reward``, ``history``
and ``first_epoch``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ...cards import adapter_card
from ...generators.lora_merge import merged_lora
from ...generators.sampling import broken_samples
from ...provenance import write_provenance
from ..training import require_working_samples

TRAINER_STATE = "trainer_state.json"  # marks a complete DDPO checkpoint folder


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


class AdapterPublishingMixin:
    """``save_pretrained``, ``push_to_hub`` and ``model_card`` of the DDPO trainer (the stock ones write a Stable
    Diffusion pipeline)."""

    provenance: dict | None = None
    evaluation: dict | None = None  # evaluate_policies' results, once measured: the card's model-index

    def require_working_policy(self, num_samples: int = 4) -> None:
        """Sample a few identities from the policy as it is now and refuse to save it if a sample is broken.

        Each epoch's samples are checked before they are scored, but the last update is only seen here: weights of
        1e9 are finite yet give NaN or flat images. Every process draws the same samples, so all stop together.
        """
        generator = self.sd_pipeline.generator
        identities = torch.arange(min(num_samples, len(generator.label_names)))
        with merged_lora(generator.transformer):
            images = generator.sample(
                identities,
                seed=0,
                num_inference_steps=self.config.sample_num_steps,
                guidance_scale=self.config.sample_guidance_scale,
                eta=self.config.sample_eta,
            )
        advice = f"Lower train_learning_rate ({self.config.train_learning_rate:g}); the policy was not saved."
        require_working_samples(broken_samples(images), "The trained DDPO policy's samples", advice)

    def _save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """The identity-adapter folder with its model card and provenance (the stock one writes a Stable Diffusion
        pipeline)."""
        last = self.history[-1] if self.history else {}
        strength = self.config.reference_strength
        extra = {
            "stage": "ddpo",
            "cold_start_adapter": self.config.adapter,
            "epochs": self.first_epoch,
            "shots": self.config.shots,
            "split_seed": self.config.split_seed,
            "reward": self.reward.options.record(),
            **({"reference_strength": strength} if strength is not None else {}),
            "final_reward_terms": {k: v for k, v in last.items() if k.startswith("reward/")},
        }
        self.sd_pipeline.save_pretrained(save_directory, card=self.model_card(), extra=extra)
        if self.provenance is not None:
            write_provenance(save_directory, self.provenance)

    def save_pretrained(self, save_directory: str | os.PathLike | None = None, provenance: dict | None = None) -> Path:
        """Write the trained adapter (default: ``output_dir``); load it with ``IdentityGenerator.from_pretrained``.

        ``provenance`` (what the recipe records: the split, the cold-start parent, the reward and sampler) is kept
        for later saves and pushes."""
        if provenance is not None:
            self.provenance = provenance
        self.require_working_policy()
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
        from ...hub import push_adapter

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
        reference = ""
        if config.reference_strength is not None:
            reference = (
                f", each chain started from a real training image of its identity noised to reference strength "
                f"{config.reference_strength} (only the steps that remain are sampled and trained)"
            )
        extra = (
            "## Reward-guided RL\n\n"
            f"Started from the cold-start adapter `{config.adapter}` and trained with DDPO (TRL's `DDPOTrainer`, "
            f"PPO clip range {config.train_clip_range:g}) on groups of {config.samples_per_identity} samples for "
            f"{self.identities_per_epoch} identities per epoch, {config.sample_num_steps} DDIM steps (eta "
            f"{config.sample_eta:g}, guidance {config.sample_guidance_scale:g}){reference}. Reward: tanh of z-scored "
            f"semantic consistency, coverage and expression richness with weights ({weights}), computed over each "
            f"whole epoch against a memory bank of the real training images. Anchors: {anchors}.\n\n"
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
            evaluation=self.evaluation,
        )
