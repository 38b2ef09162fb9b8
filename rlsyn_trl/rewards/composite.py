"""The Stage-2 composite identity reward (docs/method.md, "Stage 2: reward-guided RL (DDPO)") as one pure function.

Conventions, fixed here so that logs, tests and the trainer agree:

- ``S(X)``, the trace of the covariance, is the UNBIASED estimate ``sum_i ||x_i - mean(X)||^2 / (n - 1)``; ``S`` of
  fewer than two vectors is 0. Unbiased because the target ``S_ref`` often comes from a 2- or 3-image bank while the
  group has ``G >= 4`` samples: the population estimate would shrink a 2-image spread by half and a 4-sample one by a
  quarter, so the target and the group would not be comparable. It also makes the mean of the leave-one-out spreads of
  a group equal the group's spread, so the leave-one-out share carries no bias from the group size alone.
- Median heuristic: ``sigma`` = the median (numpy's: the mean of the two middle values for an even count) of the
  Euclidean distances over all unordered pairs ``i < j`` of bank entries, duplicates included.
- z-scores use the POPULATION std over the N samples of the call (they normalise this epoch's samples, they do not
  estimate anything). A term whose std is zero up to rounding (``std <= 1e-9 * max(1, max|x|)``, computed in float64)
  gets z-score 0 for every sample: it carries no ranking, and dividing rounding noise would invent one.
- Everything is computed in float64 without autograd and returned in the dtype of ``features``; a reward is a
  number the policy gradient consumes, never something to differentiate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_REWARD",
    "RewardOptionError",
    "RewardOptions",
    "composite_reward",
    "median_heuristic_sigma",
    "rbf_kernel",
    "trace_covariance",
]

_ZERO_STD_TOL = 1e-9


class RewardOptionError(ValueError):
    """A reward option has a value the reward cannot use; ``name`` and ``value`` let a stage name its own flag."""

    def __init__(self, name: str, value: Any, fix: str):
        super().__init__(f"{name} {value!r}: {fix}")
        self.name, self.value, self.fix = name, value, fix


def _positive_or_none(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and value > 0)


@dataclass(frozen=True)
class RewardOptions:
    """The composite reward's weights and constants: one typed value from a stage's settings to the reward call.

    Its defaults and checks are the only ones: the stage settings (``RewardSettings``) take their defaults from here
    and build one of these, the reward takes it, and provenance records it (:meth:`record`) and reads it back
    (:meth:`from_record`), so a trained policy and the dataset scored with its reward cannot drift apart.
    """

    weights: tuple[float, float, float] = (1.0, 0.75, 0.25)
    alpha: float = 0.5
    sigma: float | None = None  # median heuristic on the memory bank
    eps: float = 0.1
    tau: float | None = None  # S_ref(y) per identity

    def __post_init__(self) -> None:
        try:  # one canonical form (a YAML list, a tuple, ints): records and comparisons see the same value
            weights = tuple(float(weight) for weight in self.weights)
        except (TypeError, ValueError):
            weights = None
        if weights is None or len(weights) != 3 or not all(math.isfinite(weight) for weight in weights):
            raise RewardOptionError("weights", self.weights, "must be three finite numbers (sem, cov, exp).")
        object.__setattr__(self, "weights", weights)
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise RewardOptionError("alpha", self.alpha, "must be a finite number >= 0.")
        for name in ("sigma", "tau"):
            if not _positive_or_none(getattr(self, name)):
                raise RewardOptionError(name, getattr(self, name), "must be a positive finite number (or null).")
        if not (math.isfinite(self.eps) and self.eps > -1):
            raise RewardOptionError("eps", self.eps, "must be a finite number > -1 (the target is (1 + eps) S_ref).")

    def replace(self, **changes: Any) -> RewardOptions:
        """These options with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """The JSON form provenance and adapter configs store (weights as a list)."""
        return {**dataclasses.asdict(self), "weights": list(self.weights)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RewardOptions:
        """The options a record holds (:meth:`record`, or a provenance ``reward`` section with its ``encoder``);
        fields it lacks keep their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in names})


DEFAULT_REWARD = RewardOptions()


def trace_covariance(features: torch.Tensor) -> torch.Tensor:
    """``S(X)``: the unbiased trace of the covariance of the rows of ``features`` [n, D]; 0 when ``n < 2``."""
    if features.ndim != 2:
        raise ValueError(f"trace_covariance expects a [n, D] tensor, got shape {tuple(features.shape)}")
    n = features.shape[0]
    if n < 2:
        return features.new_zeros(())
    centred = features - features.mean(dim=0, keepdim=True)
    return centred.pow(2).sum() / (n - 1)


def _squared_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """All ``||u_i - v_j||^2`` through one matrix product (clamped: rounding can make the identity slightly < 0)."""
    return (u.pow(2).sum(1, keepdim=True) + v.pow(2).sum(1) - 2 * u @ v.T).clamp_min(0)


def rbf_kernel(u: torch.Tensor, v: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The kernel matrix ``k(u_i, v_j) = exp(-||u_i - v_j||^2 / (2 sigma^2))`` for ``u`` [A, D], ``v`` [B, D]."""
    return torch.exp(-_squared_distances(u, v) / (2 * sigma**2))


def median_heuristic_sigma(bank_features: torch.Tensor) -> torch.Tensor:
    """The median distance between bank entries, the default kernel width (a scale taken from the real data)."""
    if bank_features.shape[0] < 2:
        raise ValueError(
            "The median heuristic for sigma needs at least 2 bank features (it uses distances between them); "
            f"the bank has {bank_features.shape[0]}. Pass sigma explicitly."
        )
    distances = torch.pdist(bank_features).sort().values
    count = distances.numel()
    median = (distances[(count - 1) // 2] + distances[count // 2]) / 2
    if not median > 0:
        raise ValueError(
            "The median distance between bank features is 0 (most bank features coincide), so the median "
            "heuristic gives no kernel width. Pass sigma explicitly."
        )
    return median


def _z_score(values: torch.Tensor) -> torch.Tensor:
    """Population z-score over the samples; 0 where the term is constant (see the module docstring)."""
    std = values.std(correction=0)
    if std <= _ZERO_STD_TOL * max(1.0, values.abs().max().item()):
        return torch.zeros_like(values)
    return (values - values.mean()) / std


def _group_scatter(
    features: torch.Tensor, group: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group sizes, per-row ``||x - mean(group)||^2`` and per-group total scatter, without a Python loop."""
    size = torch.bincount(group, minlength=num_groups)
    sums = features.new_zeros(num_groups, features.shape[1]).index_add_(0, group, features)
    centred_sq = (features - sums[group] / size[group, None]).pow(2).sum(1)
    scatter = features.new_zeros(num_groups).index_add_(0, group, centred_sq)
    return size, centred_sq, scatter


def _unbiased(scatter: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Scatter / (n - 1), with ``S = 0`` for sets of fewer than two vectors."""
    return torch.where(size >= 2, scatter / (size - 1).clamp_min(1), torch.zeros_like(scatter))


def _check_inputs(
    features: torch.Tensor, labels: torch.Tensor, bank_features: torch.Tensor, bank_labels: torch.Tensor
) -> None:
    if features.ndim != 2 or bank_features.ndim != 2:
        raise ValueError(
            f"features and bank_features must be [N, D] and [M, D]; got {tuple(features.shape)} "
            f"and {tuple(bank_features.shape)}"
        )
    if features.shape[1] != bank_features.shape[1]:
        raise ValueError(f"feature sizes differ: generated D={features.shape[1]}, bank D={bank_features.shape[1]}")
    if labels.shape != (features.shape[0],) or bank_labels.shape != (bank_features.shape[0],):
        raise ValueError(
            f"labels must be [N] and bank_labels [M]; got {tuple(labels.shape)} for N={features.shape[0]} and "
            f"{tuple(bank_labels.shape)} for M={bank_features.shape[0]}"
        )
    for name, tensor in (("labels", labels), ("bank_labels", bank_labels)):
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer identity ids, got dtype {tensor.dtype}")
    for name, tensor in (("features", features), ("bank_features", bank_features)):
        bad = (~torch.isfinite(tensor)).any(dim=1)
        if bad.any():
            raise ValueError(
                f"{name} has NaN or inf values in {int(bad.sum())} row(s), e.g. row {int(bad.nonzero()[0])}"
            )
    if bank_features.shape[0] == 0:
        raise ValueError("The memory bank is empty")


def _reference_spreads(
    identities: Sequence[int],
    bank_rows: torch.Tensor,
    bank_size: torch.Tensor,
    bank_spread: torch.Tensor,
    reference_spread: float | Mapping[int, float] | None,
    fallback_spread: float | None,
) -> tuple[list[float], list[str]]:
    """``S_ref(y)`` per identity and the rule that gave it (logged: a 1-shot run must say which target it used)."""
    multi_image = bank_size >= 2
    bank_mean = bank_spread[multi_image].mean().item() if multi_image.any() else None
    given = reference_spread if isinstance(reference_spread, Mapping) else {}
    values, sources = [], []
    for identity, row in zip(identities, bank_rows.tolist()):
        if reference_spread is not None and not isinstance(reference_spread, Mapping):
            values.append(float(reference_spread))
            sources.append("given")
        elif identity in given:
            values.append(float(given[identity]))
            sources.append("given")
        elif bank_size[row] >= 2:
            values.append(bank_spread[row].item())
            sources.append("bank")
        elif bank_mean is not None:
            values.append(bank_mean)
            sources.append("bank_mean")
        elif fallback_spread is not None:
            values.append(float(fallback_spread))
            sources.append("public")
        else:
            raise ValueError(
                f"Identity {identity} has a single bank image, no bank identity has two or more, and no "
                "fallback_spread (the public identities' mean within-identity spread) was given: there is no "
                "reference spread for R_exp. Build the MemoryBank with public images, or pass fallback_spread."
            )
    bad = [identity for identity, value in zip(identities, values) if not (math.isfinite(value) and value >= 0)]
    if bad:
        raise ValueError(f"Reference spreads must be finite and >= 0; identities {bad} got {values}")
    return values, sources


def composite_reward(
    features: torch.Tensor,
    labels: torch.Tensor,
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    options: RewardOptions = DEFAULT_REWARD,
    *,
    reference_spread: float | Mapping[int, float] | None = None,
    fallback_spread: float | None = None,
    median_sigma: float | None = None,
    **changes: Any,
) -> dict[str, torch.Tensor | list[str]]:
    """Semantic, coverage and expression-richness rewards of N generated samples and their combination.

    ``features`` [N, D] (L2-normalised by the caller) belong to identities ``labels`` [N]; every identity must have
    at least 2 samples (set-level terms) and at least one bank entry in ``bank_features`` [M, D] / ``bank_labels``.
    ``options`` holds the weights and constants; ``changes`` are fields of it changed for this call (``tau=0.2``).
    ``reference_spread`` (one float, or a mapping identity -> float) overrides the ``S_ref`` rule;
    ``fallback_spread`` is the public identities' mean spread, the last fallback for 1-shot banks; ``median_sigma`` is
    the bank's median-heuristic width where the caller already has it (a memory bank computes it once per run).

    Returns per-sample [N] tensors ``sem``, ``cov``, ``exp``, ``z_sem``, ``z_cov``, ``z_exp``, ``total``; the scalar
    ``sigma`` used; and per-identity [K] entries in ``identities`` order (sorted): ``identities``, ``s_ref``,
    ``s_ref_source`` (list of ``"given"``, ``"bank"``, ``"bank_mean"``, ``"public"``), ``tau``, ``group_spread``
    (``S(G_y)``) and ``group_exp`` (``E(G_y)``).
    """
    _check_inputs(features, labels, bank_features, bank_labels)
    if changes:
        options = options.replace(**changes)
    weights, alpha, sigma, eps, tau = options.weights, options.alpha, options.sigma, options.eps, options.tau
    out_dtype = features.dtype
    device = features.device
    f = features.detach().to(torch.float64)
    bank = bank_features.detach().to(device=device, dtype=torch.float64)
    labels = labels.to(device)
    bank_labels = bank_labels.to(device)

    identities, group = torch.unique(labels, return_inverse=True)
    num_groups = identities.numel()
    group_size, centred_sq, group_scatter = _group_scatter(f, group, num_groups)
    if (group_size < 2).any():
        lonely = identities[group_size < 2].tolist()
        raise ValueError(
            f"Identities {lonely} have a single generated sample; the coverage and leave-one-out expression terms "
            "need a group of G >= 2 samples per identity (the trainer draws G >= 4)."
        )
    bank_ids, bank_group = torch.unique(bank_labels, return_inverse=True)
    bank_rows = torch.searchsorted(bank_ids, identities).clamp_max(bank_ids.numel() - 1)
    missing = bank_ids[bank_rows] != identities
    if missing.any():
        raise ValueError(f"Identities {identities[missing].tolist()} are not in the memory bank")
    bank_size, _, bank_scatter = _group_scatter(bank, bank_group, bank_ids.numel())
    sample_rows = bank_rows[group]

    if sigma is None and median_sigma is None:
        sigma_t = median_heuristic_sigma(bank)
    else:
        sigma_t = torch.tensor(float(median_sigma if sigma is None else sigma), dtype=torch.float64, device=device)

    # Semantic consistency: normalise(mean(B_y)) == normalise(sum(B_y)).
    prototypes = F.normalize(bank.new_zeros(bank_ids.numel(), bank.shape[1]).index_add_(0, bank_group, bank), dim=1)
    sem = ((F.normalize(f, dim=1) * prototypes[sample_rows]).sum(1) + 1) / 2

    # Coverage: attraction to the identity's real images, repulsion from its other samples (self excluded).
    same_bank = sample_rows[:, None] == bank_group[None, :]
    to_bank = (rbf_kernel(f, bank, sigma_t) * same_bank).sum(1) / bank_size[sample_rows]
    same_group = group[:, None] == group[None, :]
    same_group.fill_diagonal_(False)
    to_group = (rbf_kernel(f, f, sigma_t) * same_group).sum(1) / (group_size[group] - 1)
    cov = to_bank - alpha * to_group

    # Expression richness: E(G) and the leave-one-out E(G \ g) from the centred scatter (no loop over samples).
    # Removing x_i from a set with centred scatter T changes it to T - n/(n-1) * ||x_i - mean||^2.
    s_ref_list, sources = _reference_spreads(
        identities.tolist(),
        bank_rows,
        bank_size,
        _unbiased(bank_scatter, bank_size),
        reference_spread,
        fallback_spread,
    )
    s_ref = torch.tensor(s_ref_list, dtype=torch.float64, device=device)
    if tau is None:
        if (s_ref <= 0).any():
            raise ValueError(
                f"Identities {identities[s_ref <= 0].tolist()} have a reference spread of 0 (their bank features "
                "coincide), so tau = S_ref would divide by zero. Pass tau or reference_spread explicitly."
            )
        tau_t = s_ref
    else:
        tau_t = torch.full_like(s_ref, float(tau))
    target = (1 + eps) * s_ref
    group_spread = _unbiased(group_scatter, group_size)
    group_exp = -(((group_spread - target) / tau_t) ** 2)
    n = group_size[group]
    loo_scatter = (group_scatter[group] - centred_sq * n / (n - 1)).clamp_min(0)
    loo_exp = -(((_unbiased(loo_scatter, n - 1) - target[group]) / tau_t[group]) ** 2)
    exp = group_exp[group] - loo_exp

    z_sem, z_cov, z_exp = _z_score(sem), _z_score(cov), _z_score(exp)
    total = torch.tanh(weights[0] * z_sem + weights[1] * z_cov + weights[2] * z_exp)

    result: dict[str, torch.Tensor | list[str]] = {
        name: value.to(out_dtype)
        for name, value in {
            "sem": sem,
            "cov": cov,
            "exp": exp,
            "z_sem": z_sem,
            "z_cov": z_cov,
            "z_exp": z_exp,
            "total": total,
            "sigma": sigma_t,
            "s_ref": s_ref,
            "tau": tau_t,
            "group_spread": group_spread,
            "group_exp": group_exp,
        }.items()
    }
    result["identities"] = identities
    result["s_ref_source"] = sources
    return result
