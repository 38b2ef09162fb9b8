"""composite_reward against a loop-by-loop numpy reference written straight from docs/method.md, plus its edge cases."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from rlsyn_trl.generation import GenerationConfig
from rlsyn_trl.rewards import RewardOptions, composite_reward, median_heuristic_sigma, rbf_kernel, trace_covariance
from rlsyn_trl.rewards.composite import RewardOptionError
from rlsyn_trl.settings import SettingsError

# --------------------------------------------------------------------------------------------------------------------
# The numpy reference: plain loops, np.cov for S (its default normalisation is the unbiased n - 1), np.median.


def np_spread(x: np.ndarray) -> float:
    return 0.0 if len(x) < 2 else float(np.trace(np.cov(x, rowvar=False)))


def np_kernel(u: np.ndarray, v: np.ndarray, sigma: float) -> float:
    return float(np.exp(-np.sum((u - v) ** 2) / (2 * sigma**2)))


def np_zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()  # numpy's default ddof=0: the population std
    return np.zeros_like(x) if std == 0 else (x - x.mean()) / std


def np_reference(
    feats,
    labels,
    bank,
    bank_labels,
    weights=(1.0, 0.75, 0.25),
    alpha=0.5,
    sigma=None,
    eps=0.1,
    tau=None,
    reference_spread=None,
    fallback_spread=None,
):
    feats, bank = np.asarray(feats, np.float64), np.asarray(bank, np.float64)
    labels, bank_labels = np.asarray(labels), np.asarray(bank_labels)
    n = len(feats)
    if sigma is None:
        sigma = float(
            np.median([np.linalg.norm(bank[i] - bank[j]) for i, j in itertools.combinations(range(len(bank)), 2)])
        )
    bank_spreads = {y: np_spread(bank[bank_labels == y]) for y in set(bank_labels.tolist())}
    multi = [bank_spreads[y] for y in bank_spreads if (bank_labels == y).sum() >= 2]

    def s_ref(y):
        if isinstance(reference_spread, float):
            return reference_spread, "given"
        if isinstance(reference_spread, dict) and y in reference_spread:
            return reference_spread[y], "given"
        if (bank_labels == y).sum() >= 2:
            return bank_spreads[y], "bank"
        if multi:
            return float(np.mean(multi)), "bank_mean"
        return fallback_spread, "public"

    def energy(x, y):
        ref = s_ref(y)[0]
        t = ref if tau is None else tau
        return -(((np_spread(x) - (1 + eps) * ref) / t) ** 2)

    sem, cov, exp = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        y = labels[i]
        bank_y = bank[bank_labels == y]
        proto = bank_y.mean(0)
        proto = proto / np.linalg.norm(proto)
        sem[i] = (feats[i] @ proto / np.linalg.norm(feats[i]) + 1) / 2
        others = [j for j in range(n) if labels[j] == y and j != i]
        attract = np.mean([np_kernel(feats[i], r, sigma) for r in bank_y])
        repel = np.mean([np_kernel(feats[i], feats[j], sigma) for j in others])
        cov[i] = attract - alpha * repel
        group = feats[labels == y]
        exp[i] = energy(group, y) - energy(feats[others], y)
    z = [np_zscore(v) for v in (sem, cov, exp)]
    total = np.tanh(weights[0] * z[0] + weights[1] * z[1] + weights[2] * z[2])
    ids = sorted(set(labels.tolist()))
    return {
        "sem": sem,
        "cov": cov,
        "exp": exp,
        "z_sem": z[0],
        "z_cov": z[1],
        "z_exp": z[2],
        "total": total,
        "sigma": sigma,
        "s_ref": np.array([s_ref(y)[0] for y in ids]),
        "s_ref_source": [s_ref(y)[1] for y in ids],
    }


# --------------------------------------------------------------------------------------------------------------------


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@pytest.fixture
def setup():
    """N=12 samples of 3 identities (4 each), D=8, a bank of 2 real features per identity, clustered per identity."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(4)
    bank_labels = torch.arange(3).repeat_interleave(2)
    feats = unit(centres[labels] + 0.6 * torch.randn(12, 8, generator=gen, dtype=torch.float64))
    bank = unit(centres[bank_labels] + 0.6 * torch.randn(6, 8, generator=gen, dtype=torch.float64))
    return feats, labels, bank, bank_labels


def assert_matches(result, ref, rtol=1e-9, atol=1e-11):
    for key in ("sem", "cov", "exp", "z_sem", "z_cov", "z_exp", "total", "s_ref"):
        np.testing.assert_allclose(result[key].numpy(), ref[key], rtol=rtol, atol=atol, err_msg=key)
    np.testing.assert_allclose(result["sigma"].item(), ref["sigma"], rtol=rtol)
    assert result["s_ref_source"] == ref["s_ref_source"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"sigma": 0.7},
        {"tau": 0.05},
        {"alpha": 1.3, "eps": 0.4, "weights": (0.5, 2.0, 1.5)},
        {"reference_spread": 0.3},
        {"reference_spread": {1: 0.25}},
    ],
    ids=["defaults", "sigma", "tau", "constants", "ref_float", "ref_mapping"],
)
def test_matches_numpy_reference(setup, kwargs):
    result = composite_reward(*setup, **kwargs)
    ref = np_reference(*[t.numpy() for t in setup], **kwargs)
    assert_matches(result, ref)
    assert result["identities"].tolist() == [0, 1, 2]
    # The per-sample terms really vary here, so the comparison exercises the z-scores and the tanh.
    assert all(result[k].std() > 1e-3 for k in ("sem", "cov", "exp"))


def test_float32_inputs_return_float32_close_to_reference(setup):
    feats, labels, bank, bank_labels = setup
    result = composite_reward(feats.float(), labels, bank.float(), bank_labels)
    ref = np_reference(feats.float().numpy(), labels.numpy(), bank.float().numpy(), bank_labels.numpy())
    assert result["total"].dtype == torch.float32
    assert_matches(result, ref, rtol=1e-5, atol=1e-6)


def test_leave_one_out_share_and_group_terms(setup):
    feats, labels, bank, bank_labels = setup
    result = composite_reward(feats, labels, bank, bank_labels, tau=0.2)
    for y in range(3):
        group = feats[labels == y]
        s_ref = trace_covariance(bank[bank_labels == y])

        def energy(x: torch.Tensor, s_ref: torch.Tensor = s_ref) -> torch.Tensor:
            return -(((trace_covariance(x) - 1.1 * s_ref) / 0.2) ** 2)

        assert torch.isclose(result["group_spread"][y], trace_covariance(group))
        assert torch.isclose(result["group_exp"][y], energy(group))
        for k, i in enumerate((labels == y).nonzero().flatten().tolist()):
            expected = energy(group) - energy(torch.cat([group[:k], group[k + 1 :]]))
            assert torch.isclose(result["exp"][i], expected)
    assert torch.equal(result["tau"], torch.full((3,), 0.2, dtype=torch.float64))


def test_permuting_samples_permutes_rewards(setup):
    feats, labels, bank, bank_labels = setup
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    base = composite_reward(feats, labels, bank, bank_labels)
    permuted = composite_reward(feats[perm], labels[perm], bank, bank_labels)
    for key in ("sem", "cov", "exp", "total"):
        torch.testing.assert_close(permuted[key], base[key][perm])


def test_trace_covariance_and_kernel_helpers():
    x = torch.randn(5, 3, dtype=torch.float64)
    assert trace_covariance(x).item() == pytest.approx(np_spread(x.numpy()))
    assert trace_covariance(x[:1]).item() == 0.0
    kernel = rbf_kernel(x, x[:2], 0.8)
    for i, j in itertools.product(range(5), range(2)):
        assert kernel[i, j].item() == pytest.approx(np_kernel(x[i].numpy(), x[j].numpy(), 0.8))


def test_median_heuristic_even_pair_count_averages_the_middle_two():
    bank = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)  # 6 distances: 1,2,3,4,6,7
    assert median_heuristic_sigma(bank).item() == pytest.approx(3.5)


def test_one_shot_bank_uses_fallback_spread(setup):
    feats, labels, bank, bank_labels = setup
    one_shot = bank[::2], bank_labels[::2]
    result = composite_reward(feats, labels, *one_shot, fallback_spread=0.15)
    assert result["s_ref_source"] == ["public"] * 3
    assert torch.allclose(result["s_ref"], torch.full((3,), 0.15, dtype=torch.float64))
    assert_matches(result, np_reference(feats, labels, *[t.numpy() for t in one_shot], fallback_spread=0.15))
    with pytest.raises(ValueError, match="fallback_spread"):
        composite_reward(feats, labels, *one_shot)


def test_mixed_bank_uses_mean_spread_of_multi_image_identities(setup):
    feats, labels, bank, bank_labels = setup
    gen = torch.Generator().manual_seed(2)
    extra = unit(torch.randn(3, 8, generator=gen, dtype=torch.float64))  # identity 7: 3 images, no samples
    mixed = torch.cat([bank[:4], bank[4:5], extra]), torch.tensor([0, 0, 1, 1, 2, 7, 7, 7])
    result = composite_reward(feats, labels, *mixed, fallback_spread=99.0)
    expected = (trace_covariance(bank[:2]) + trace_covariance(bank[2:4]) + trace_covariance(extra)) / 3
    assert result["s_ref_source"] == ["bank", "bank", "bank_mean"]
    assert torch.isclose(result["s_ref"][2], expected)
    assert_matches(result, np_reference(feats, labels, *[t.numpy() for t in mixed]))


def test_collapsed_group_gets_lower_expression_share_than_spread_group():
    # Identity 0's samples sit on one point, identity 1's are spread; both have a positive target spread.
    gen = torch.Generator().manual_seed(3)
    centres = unit(torch.randn(2, 16, generator=gen, dtype=torch.float64))
    bank_labels = torch.tensor([0, 0, 0, 1, 1, 1])
    bank = unit(centres[bank_labels] + 0.3 * torch.randn(6, 16, generator=gen, dtype=torch.float64))
    collapsed = unit(centres[0] + 0.3 * torch.randn(16, generator=gen, dtype=torch.float64)).expand(6, 16)
    spread = unit(centres[1] + 0.3 * torch.randn(6, 16, generator=gen, dtype=torch.float64))
    labels = torch.tensor([0] * 6 + [1] * 6)
    result = composite_reward(torch.cat([collapsed, spread]), labels, bank, bank_labels)
    assert (result["s_ref"] > 0).all()
    assert result["group_exp"][0] < result["group_exp"][1]
    for key in ("exp", "z_exp"):
        assert result[key][:6].mean() < result[key][6:].mean()
    # A group on one point has a zero leave-one-out share: removing any sample leaves it on that point.
    assert torch.allclose(result["exp"][:6], torch.zeros(6, dtype=torch.float64), atol=1e-12)


def test_constant_terms_get_zero_z_scores_and_no_nan():
    # Every sample sits exactly on its identity's prototype: R_sem is 1 and R_exp is 0 for all samples.
    bank = unit(torch.tensor([[1.0, 0.2, 0.0], [1.0, -0.2, 0.0], [0.0, 1.0, 0.2], [0.0, 1.0, -0.2]]))
    bank_labels = torch.tensor([0, 0, 1, 1])
    prototypes = unit(torch.stack([bank[:2].mean(0), bank[2:].mean(0)]))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    result = composite_reward(prototypes[labels], labels, bank, bank_labels)
    assert torch.equal(result["z_sem"], torch.zeros(6))
    assert torch.equal(result["z_exp"], torch.zeros(6))
    assert all(torch.isfinite(result[k]).all() for k in ("z_cov", "total"))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda f, y, b, by: (f[:9], y[:9], b, by), "G >= 2"),  # identity 2 keeps a single sample
        (lambda f, y, b, by: (f, torch.where(y == 2, 7, y), b, by), r"\[7\] are not in the memory bank"),
        (lambda f, y, b, by: (f.index_fill(0, torch.tensor([3]), float("nan")), y, b, by), "NaN or inf"),
        (lambda f, y, b, by: (f, y, b.index_fill(0, torch.tensor([1]), float("inf")), by), "NaN or inf"),
        (lambda f, y, b, by: (f[:, :4], y, b, by), "feature sizes differ"),
        (lambda f, y, b, by: (f, y[:5], b, by), "labels must be"),
        (lambda f, y, b, by: (f, y.double(), b, by), "integer"),
    ],
    ids=["group_of_one", "absent_identity", "nan_features", "inf_bank", "dim_mismatch", "label_shape", "float_labels"],
)
def test_degenerate_inputs_raise(setup, mutate, match):
    with pytest.raises(ValueError, match=match):
        composite_reward(*mutate(*setup))


def test_degenerate_sigma_tau_and_spread_raise(setup):
    feats, labels, bank, bank_labels = setup
    with pytest.raises(ValueError, match="at least 2 bank features"):
        composite_reward(feats[:4], labels[:4], bank[:1], bank_labels[:1], fallback_spread=0.1)
    duplicated = bank[[0, 0, 2, 2, 4, 4]]
    with pytest.raises(ValueError, match="median distance"):
        composite_reward(feats, labels, bank[[0] * 6], bank_labels)
    with pytest.raises(ValueError, match="reference spread of 0"):
        composite_reward(feats, labels, duplicated, bank_labels, sigma=0.5)
    for bad in ({"sigma": 0.0}, {"sigma": float("nan")}, {"tau": -1.0}, {"weights": (1.0, 1.0)}):
        with pytest.raises(ValueError):
            composite_reward(feats, labels, bank, bank_labels, **bad)
    with pytest.raises(ValueError, match="finite and >= 0"):
        composite_reward(feats, labels, bank, bank_labels, reference_spread=float("nan"), tau=0.1)


def test_reward_options_are_checked_once_and_round_trip_through_their_record():
    options = RewardOptions(weights=[1, 0.5, 2], alpha=0.7, tau=0.3)
    assert options.weights == (1.0, 0.5, 2.0)  # one canonical form, whatever the YAML gave
    assert RewardOptions.from_record(json.loads(json.dumps(options.record()))) == options
    # A provenance section written before the typed options: the same keys, next to phi.
    old = {"encoder": "phi", "weights": [1.0, 0.75, 0.25], "alpha": 0.5, "sigma": None, "eps": 0.1, "tau": 0.25}
    assert RewardOptions.from_record(old) == RewardOptions(tau=0.25)
    for name, value in (("weights", (1.0, 1.0)), ("alpha", -0.1), ("sigma", 0.0), ("eps", -1.0), ("tau", float("inf"))):
        with pytest.raises(RewardOptionError, match=f"^{name} ") as error:
            RewardOptions(**{name: value})
        assert error.value.name == name
    with pytest.raises(SettingsError, match="^--reward_tau -1.0: must be a positive"):
        GenerationConfig(reward_tau=-1.0)  # a stage's flag, named as the user typed it
