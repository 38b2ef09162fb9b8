"""Stage 3: dynamic selection of synthetic samples while the downstream recognizer trains.

Each selection round forwards a mixed batch of real images and synthetic candidates, simulates one SGD step and
measures, per candidate x, how its own identity loss moves: dl(x) = l(w', x) - l(w, x). A candidate whose loss
drops the most is one the model learns consistently with the real images; a candidate whose label fights the real
data (a wrong or unconvincing identity) gains little or even loses. The ``keep_ratio`` candidates with the
smallest dl are kept (sampling weight up), the others are demoted (weight down).

Virtual batch: in the paper the step is taken on the whole mixed batch (``virtual_batch="mixed"``).
Each candidate then also pulls on its own loss, by about lr / n * |grad l(x)|^2, and that self-influence is
largest for high-loss, mislabelled samples: once the real images are fitted it can outweigh their disagreement.
``virtual_batch="real"`` steps on the real images only, so dl(x) ~ -lr * <grad l(x), grad L_real> measures
agreement with the real data alone. ``benchmarks/positive_control.py --rows noisy`` compares the two: with half of a
pool mislabelled, the mixed step kept the wrong images (1 shot: 75.0% vs 76.0% without selection) while the real
step rejected them (85.0%), so ``"real"`` is the default and ``"mixed"`` stays available for the paper's setting.

Weighting rule: every synthetic sample carries a log-weight, 0 at the start. A kept candidate's log-weight grows by
``weight_step``, a demoted one's shrinks by ``weight_step``; log-weights are clipped to
``[-max_log_weight, max_log_weight]`` so that no sample is ever excluded for good (a sample judged early, by a
poor model, can recover), and the weights ``exp(log-weight)`` are renormalised to mean 1 so that the synthetic
share of uniformly mixed batches stays what the user configured. The weights drive the training sampler
(``rlsyn_trl.recognizer.MixedBatchSampler``): a sample of weight 2 is drawn twice as often as one of weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
import torch
from torch import nn
from torch.func import functional_call
from transformers import Trainer, TrainerCallback

PerSampleLoss = Callable[[object, torch.Tensor], torch.Tensor]
"""``loss_fn(model_outputs, labels)`` -> one loss per sample (no reduction)."""


@dataclass
class SelectionConfig:
    """Settings of the dynamic sample selection (paper: initial mini-batch 64)."""

    keep_ratio: float = field(
        default=0.5, metadata={"help": "Fraction of each round's synthetic candidates kept (smallest dl)."}
    )
    round_every: int = field(default=10, metadata={"help": "Run a selection round every this many training steps."})
    virtual_lr: float = field(default=0.1, metadata={"help": "Step size eta of the virtual SGD update."})
    candidates_per_round: int = field(default=64, metadata={"help": "Synthetic candidates scored per round."})
    real_per_round: int = field(default=64, metadata={"help": "Real images in each round's mixed batch."})
    weight_step: float = field(
        default=0.25, metadata={"help": "Log-weight added to kept candidates and taken from the others."}
    )
    virtual_batch: str = field(
        default="real",
        metadata={
            "help": "Batch whose gradient makes the virtual step: 'mixed' (real + candidates, as in the paper) or "
            "'real' (real images only: no candidate pulls on its own loss)."
        },
    )
    max_log_weight: float = field(
        default=3.0, metadata={"help": "Log-weights are clipped to +/- this, so no sample is excluded for good."}
    )
    scored_dataset_path: str | None = field(
        default=None, metadata={"help": "If set, the synthetic dataset with its scores is saved there at train end."}
    )

    def __post_init__(self) -> None:
        if not 0 < self.keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        for name in ("round_every", "candidates_per_round", "real_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.virtual_batch not in ("mixed", "real"):
            raise ValueError(f"virtual_batch must be 'mixed' or 'real', got {self.virtual_batch!r}")
        if self.virtual_lr <= 0 or self.weight_step < 0 or self.max_log_weight < 0:
            raise ValueError("virtual_lr must be positive; weight_step and max_log_weight must not be negative.")


def virtual_step_utilities(
    model: nn.Module,
    loss_fn: PerSampleLoss,
    batch_inputs: torch.Tensor,
    batch_labels: torch.Tensor,
    candidate_inputs: torch.Tensor,
    candidate_labels: torch.Tensor,
    lr: float,
    *,
    step_on_candidates: bool = True,
) -> torch.Tensor:
    """Utility dl(x) = l(w', x) - l(w, x) of each candidate, with w' = w - lr * grad L(w; real batch + candidates).

    With ``step_on_candidates=False`` the gradient is that of the real batch alone (the candidates are still
    forwarded in the same batch), which removes each candidate's pull on its own loss (its self-influence).

    The update is simulated with ``torch.func.functional_call`` on detached copies of the parameters, so the
    model's parameters, their ``.grad`` and any optimizer state are never touched. The model runs in its current
    mode (during training: BatchNorm normalises with batch statistics, as the real step does) on CLONES of its
    buffers, so BatchNorm running statistics are not updated either. Dropout, if any, draws the same masks in both
    forwards and leaves the global random stream as it was.
    """
    inputs = torch.cat([batch_inputs, candidate_inputs])
    labels = torch.cat([batch_labels, candidate_labels])
    params = {name: p.detach().requires_grad_(p.requires_grad) for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    trainable = [name for name, p in params.items() if p.requires_grad]

    device = inputs.device
    devices = [] if device.type == "cpu" else [device]

    def per_sample_losses(parameters: dict[str, torch.Tensor]) -> torch.Tensor:
        # Identical dropout masks at w and w': reseed the CPU stream and this device's (torch.manual_seed would
        # reseed every visible GPU).
        torch.random.default_generator.manual_seed(0)
        if devices:
            torch.get_device_module(device).manual_seed(0)
        state = {**parameters, **{name: b.clone() for name, b in buffers.items()}}
        return loss_fn(functional_call(model, state, (inputs,)), labels)

    # Fork only this model's device's stream: without `devices`, every process would touch every visible GPU.
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        before = per_sample_losses(params)
        objective = before.mean() if step_on_candidates else before[: len(batch_labels)].mean()
        grads = torch.autograd.grad(objective, [params[name] for name in trainable], allow_unused=True)
        updated = dict(params)
        for name, grad in zip(trainable, grads):
            if grad is not None:
                updated[name] = params[name].detach() - lr * grad
        with torch.no_grad():
            after = per_sample_losses(updated)
    start = len(batch_labels)
    return (after[start:] - before[start:]).detach()


class DynamicSampleSelectionCallback(TrainerCallback):
    """Reweights a synthetic pool during ``Trainer`` training by virtual-step utility (see the module docstring).

    Every ``round_every`` steps, ``candidates_per_round`` synthetic samples (in a shuffled round-robin order, so
    that every sample gets scored) are scored together with ``real_per_round`` random real images. Statistics of
    each round go through ``trainer.log`` under ``selection/``. At train end, the last measured utility of each
    synthetic sample (NaN if never scored) and its final weight become the columns ``utility`` and
    ``selection_weight`` of ``scored_dataset``, saved with ``save_to_disk`` if ``scored_dataset_path`` is set.

    ``weights`` is updated in place: pass the tensor your training sampler reads (one entry per synthetic sample).
    """

    def __init__(
        self,
        trainer: Trainer,
        config: SelectionConfig,
        loss_fn: PerSampleLoss,
        real: tuple[torch.Tensor, torch.Tensor],
        synthetic: tuple[torch.Tensor, torch.Tensor],
        synthetic_dataset: datasets.Dataset | None = None,
        weights: torch.Tensor | None = None,
    ) -> None:
        num_synthetic = len(synthetic[1])
        if synthetic_dataset is not None and len(synthetic_dataset) != num_synthetic:
            raise ValueError(
                f"synthetic_dataset has {len(synthetic_dataset)} rows but {num_synthetic} synthetic tensors were given."
            )
        if weights is not None and weights.shape != (num_synthetic,):
            raise ValueError(f"weights must have shape ({num_synthetic},), got {tuple(weights.shape)}")
        self.trainer, self.config, self.loss_fn = trainer, config, loss_fn
        self.real_images, self.real_labels = real
        self.synthetic_images, self.synthetic_labels = synthetic
        self.synthetic_dataset = synthetic_dataset
        self.weights = weights if weights is not None else torch.ones(num_synthetic)
        self.log_weights = torch.zeros(num_synthetic)
        self.utilities = torch.full((num_synthetic,), math.nan)
        self.scored_dataset: datasets.Dataset | None = None
        self._generator = torch.Generator().manual_seed(trainer.args.seed)
        self._order = torch.randperm(num_synthetic, generator=self._generator)
        self._cursor = 0

    def _next_candidates(self) -> torch.Tensor:
        """The next slice of a shuffled round-robin over the pool; a new shuffle starts where the last one ends."""
        count = min(self.config.candidates_per_round, len(self._order))
        if self._cursor + count > len(self._order):
            rest = self._order[self._cursor :]
            fresh = torch.randperm(len(self._order), generator=self._generator)
            self._order = torch.cat([rest, fresh[~torch.isin(fresh, rest)]])
            self._cursor = 0
        candidates = self._order[self._cursor : self._cursor + count]
        self._cursor += count
        return candidates

    def selection_round(self, model: nn.Module) -> dict[str, float]:
        """Score one round of candidates, update the weights and return the round's statistics."""
        candidates = self._next_candidates()
        real = torch.randint(len(self.real_labels), (self.config.real_per_round,), generator=self._generator)
        device = next(model.parameters()).device
        utilities = virtual_step_utilities(
            model,
            self.loss_fn,
            self.real_images[real].to(device),
            self.real_labels[real].to(device),
            self.synthetic_images[candidates].to(device),
            self.synthetic_labels[candidates].to(device),
            self.config.virtual_lr,
            step_on_candidates=self.config.virtual_batch == "mixed",
        ).cpu()
        num_kept = math.ceil(self.config.keep_ratio * len(candidates))
        step = torch.full_like(utilities, -self.config.weight_step)
        step[utilities.argsort()[:num_kept]] = self.config.weight_step
        limit = self.config.max_log_weight
        self.log_weights[candidates] = (self.log_weights[candidates] + step).clamp(-limit, limit)
        weights = self.log_weights.exp()
        self.weights.copy_(weights / weights.mean())
        self.utilities[candidates] = utilities
        return {
            "selection/kept_fraction": num_kept / len(candidates),
            "selection/utility_mean": utilities.mean().item(),
            "selection/utility_std": utilities.std().item() if len(utilities) > 1 else 0.0,
            "selection/utility_min": utilities.min().item(),
            "selection/utility_max": utilities.max().item(),
            "selection/weight_min": self.weights.min().item(),
            "selection/weight_max": self.weights.max().item(),
        }

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.config.round_every == 0:
            self.trainer.log(self.selection_round(self.trainer.model))
        return control

    def on_train_end(self, args, state, control, **kwargs):
        """Every process keeps the scored dataset (the weights are the same everywhere); only one writes it."""
        if self.synthetic_dataset is not None:
            self.scored_dataset = with_scores(self.synthetic_dataset, self.utilities, self.weights)
            if self.config.scored_dataset_path and state.is_world_process_zero:
                self.scored_dataset.save_to_disk(self.config.scored_dataset_path)
        return control


def with_scores(dataset: datasets.Dataset, utilities: torch.Tensor, weights: torch.Tensor) -> datasets.Dataset:
    """``dataset`` with (replaced) float columns ``utility`` and ``selection_weight``."""
    dataset = dataset.remove_columns([c for c in ("utility", "selection_weight") if c in dataset.column_names])
    dataset = dataset.add_column("utility", utilities.tolist(), feature=datasets.Value("float32"))
    return dataset.add_column("selection_weight", weights.tolist(), feature=datasets.Value("float32"))
