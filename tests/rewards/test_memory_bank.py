"""MemoryBank: building with an encoder, the public spread, the safetensors round trip and the reward hook."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rlsyn_trl.rewards import MemoryBank, composite_reward


class ProjectionEncoder:
    """A tiny deterministic encoder with the IdentityEncoder interface: flatten, fixed random projection, normalise."""

    def __init__(self, in_features: int = 3 * 4 * 4, dim: int = 8) -> None:
        self.weight = torch.randn(in_features, dim, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        self.calls += 1
        features = images.flatten(1) @ self.weight
        return features / features.norm(dim=1, keepdim=True)


def images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture
def encoder() -> ProjectionEncoder:
    return ProjectionEncoder()


@pytest.fixture
def bank(encoder) -> MemoryBank:
    public_labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])  # identity 3 has one image: no spread
    return MemoryBank.build(
        images(6, seed=1), [0, 0, 1, 1, 2, 2], encoder, ["s21", "s22", "s23"], images(10, seed=2), public_labels
    )


def test_build_encodes_in_batches_and_computes_public_spread(encoder):
    real, public = images(6, seed=1), images(10, seed=2)
    public_labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    batched = MemoryBank.build(real, [0, 0, 1, 1, 2, 2], encoder, ["a", "b", "c"], public, public_labels, batch_size=4)
    assert encoder.calls == 2 + 3
    with torch.no_grad():
        torch.testing.assert_close(batched.features, encoder.encode(real))
        public_features = encoder.encode(public).double().numpy()
    assert batched.labels.dtype == torch.long and batched.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert batched.label_names == ["a", "b", "c"]
    spreads = [np.trace(np.cov(public_features[public_labels.numpy() == y], rowvar=False)) for y in (0, 1, 2)]
    assert batched.public_spread == pytest.approx(np.mean(spreads), rel=1e-6)
    # A plain callable works like an object with .encode; without public images there is no public spread.
    plain = MemoryBank.build(real, [0, 0, 1, 1, 2, 2], encoder.encode, ["a", "b", "c"])
    torch.testing.assert_close(plain.features, batched.features)
    assert plain.public_spread is None


@pytest.mark.parametrize("public_spread", [0.123456789012345, None])
def test_save_load_round_trip(tmp_path, bank, public_spread):
    bank.public_spread = public_spread
    path = tmp_path / "memory_bank.safetensors"
    bank.save(path)
    loaded = MemoryBank.load(path)
    assert torch.equal(loaded.features, bank.features) and torch.equal(loaded.labels, bank.labels)
    assert loaded.label_names == bank.label_names
    assert loaded.public_spread == public_spread
    assert os.listdir(tmp_path) == ["memory_bank.safetensors"]  # the temporary file was renamed, not left behind


def test_load_rejects_other_safetensors_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"features": torch.zeros(2, 3)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a memory bank"):
        MemoryBank.load(tmp_path / "other.safetensors")


def test_reward_uses_public_spread_for_a_one_shot_bank(encoder, bank):
    one_shot = MemoryBank(bank.features[::2], bank.labels[::2], bank.label_names, bank.public_spread)
    with torch.no_grad():
        features = encoder.encode(images(12, seed=3))
    labels = torch.arange(3).repeat_interleave(4)
    result = one_shot.reward(features, labels, alpha=0.3)
    assert result["s_ref_source"] == ["public"] * 3
    torch.testing.assert_close(result["s_ref"], torch.full((3,), one_shot.public_spread))
    expected = composite_reward(
        features, labels, one_shot.features, one_shot.labels, alpha=0.3, fallback_spread=one_shot.public_spread
    )
    for key in ("sem", "cov", "exp", "total"):
        torch.testing.assert_close(result[key], expected[key])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoder": lambda x: x.flatten(1)}, "L2-normalised"),
        ({"encoder": lambda x: torch.full((x.shape[0], 2), float("nan"))}, "NaN"),
        ({"images": images(6, seed=1) * 255}, r"\[-1, 1\]"),
        ({"labels": [0, 0, 1, 1, 2, 5]}, "label_names"),
        ({"public_images": images(4, seed=2)}, "together"),
        ({"public_images": images(3, seed=2), "public_labels": [0, 1, 2]}, "2 or more images"),
    ],
    ids=["not_normalised", "nan_features", "range", "label_out_of_range", "public_without_labels", "public_singletons"],
)
def test_build_rejects_bad_inputs(encoder, kwargs, match):
    arguments = {"images": images(6, seed=1), "labels": [0, 0, 1, 1, 2, 2], "encoder": encoder}
    arguments["label_names"] = ["a", "b", "c"]
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MemoryBank.build(**arguments)


def test_the_median_heuristic_sigma_is_computed_once_per_bank(bank, monkeypatch):
    import rlsyn_trl.rewards.memory_bank as memory_bank

    calls = []
    original = memory_bank.median_heuristic_sigma
    monkeypatch.setattr(memory_bank, "median_heuristic_sigma", lambda features: calls.append(1) or original(features))
    features = torch.nn.functional.normalize(torch.randn(4, bank.features.shape[1]), dim=1)
    labels = bank.labels[:2].repeat_interleave(2)
    first, second = bank.reward(features, labels), bank.reward(features.flip(0), labels)
    assert len(calls) == 1
    expected = composite_reward(features, labels, bank.features, bank.labels, fallback_spread=bank.public_spread)
    torch.testing.assert_close(first["sigma"], expected["sigma"])
    torch.testing.assert_close(first["total"], expected["total"])
    assert second["sigma"] == first["sigma"]
