import pytest
import torch
from conftest import build_tiny_generator, put_in_hf_cache

from rlsyn_trl.generators import IdentityGenerator, build_pixel_dit, class_embedders

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)


def test_build_pixel_dit_is_zero_initialised_and_never_drops_labels():
    transformer = build_pixel_dit(5, resolution=16, width=32, depth=2, heads=2, patch_size=4)
    for block in transformer.transformer_blocks:
        assert torch.count_nonzero(block.norm1.linear.weight) == 0
    assert torch.count_nonzero(transformer.proj_out_2.weight) == 0
    assert all(e.dropout_prob == 0 for e in class_embedders(transformer))
    assert class_embedders(transformer)[0].embedding_table.num_embeddings == 6  # 5 identities + null


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    generator = build_tiny_generator()
    generator.save_pretrained(tmp_path / "gen")
    loaded = IdentityGenerator.from_pretrained(tmp_path / "gen")
    assert loaded.label_names == generator.label_names
    a = generator.sample(["s1", "s2", "s3"], seed=7, num_inference_steps=3)
    b = loaded.sample(["s1", "s2", "s3"], seed=7, num_inference_steps=3)
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, generator.sample(["s1", "s2", "s3"], seed=8, num_inference_steps=3))
    assert a.min() >= -1 and a.max() <= 1


def test_hub_id_through_local_cache_offline(tmp_path, tiny_base_dir, monkeypatch):
    cache = tmp_path / "hub"
    put_in_hf_cache(tiny_base_dir, "facebook/tiny-dit", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    generator = IdentityGenerator.from_pretrained("facebook/tiny-dit")
    local = IdentityGenerator.from_pretrained(tiny_base_dir)
    assert torch.equal(
        generator.sample([0, 1], seed=0, num_inference_steps=2), local.sample([0, 1], seed=0, num_inference_steps=2)
    )


def test_unresolvable_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="not in the Hugging Face cache"):
        IdentityGenerator.from_pretrained("facebook/DiT-XL-2-256")


def test_learned_sigma_half_is_dropped():
    generator = build_tiny_generator()
    transformer = build_pixel_dit(20, resolution=32, width=32, depth=2, heads=2, patch_size=4)
    transformer.register_to_config(out_channels=2)
    doubled = type(transformer)(**{k: v for k, v in transformer.config.items() if not k.startswith("_")})
    generator.transformer = doubled
    output = generator.model_output(torch.randn(2, 1, 32, 32), torch.tensor(10), torch.tensor([0, 1]))
    assert output.shape == (2, 1, 32, 32)


def test_labels_outside_label_space_raise():
    generator = build_tiny_generator()
    with pytest.raises(KeyError, match="s99"):
        generator.sample(["s99"], seed=0, num_inference_steps=2)
    with pytest.raises(KeyError):
        generator.sample(torch.tensor([20]), seed=0, num_inference_steps=2)


def test_trajectory_log_probs_are_finite_with_eta():
    generator = build_tiny_generator()
    trajectory = generator.trajectory(
        torch.tensor([0, 1]),
        num_inference_steps=3,
        eta=1.0,
        generator=torch.Generator().manual_seed(0),
        with_log_probs=True,
    )
    assert trajectory.latents.shape == (2, 4, 1, 32, 32)
    assert trajectory.log_probs.shape == (2, 3) and torch.isfinite(trajectory.log_probs).all()


def test_denoising_loss_is_differentiable():
    generator = build_tiny_generator()
    loss = generator.denoising_loss(torch.rand(4, 1, 32, 32) * 2 - 1, torch.tensor([0, 1, 2, 3]), 0.5, 5.0)
    loss.backward()
    assert loss.item() > 0
    assert class_embedders(generator.transformer)[0].embedding_table.weight.grad is not None
