"""The shared DDIM sampler: dtype handling, per-seed determinism, DDPO's log-probs matching a recomputation, and
reference-guided starts (the truncated chain)."""

import ast
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_generator
from trl.core import randn_tensor

import rlsyn_trl
from rlsyn_trl.generators import IdentityGenerator, ReferenceStart, ddim_sample, reference_rng, start_step
from rlsyn_trl.settings import SettingsError, parse_guidance_interval, parse_reference_strength
from rlsyn_trl.trainers.ddpo.pipeline import IdentityDDPOPipeline, guided_prediction, label_embeds

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

torch.set_num_threads(1)


def test_bfloat16_generator_samples_deterministically_per_seed():
    generator = build_tiny_generator()
    generator.transformer.to(torch.bfloat16)
    assert generator.dtype == torch.bfloat16
    a = generator.sample(["s1", "s2"], seed=3, num_inference_steps=2, eta=1.0)
    b = generator.sample(["s1", "s2"], seed=3, num_inference_steps=2, eta=1.0)
    assert a.shape == (2, 1, 32, 32) and torch.isfinite(a).all() and torch.equal(a, b)
    trajectory = generator.trajectory(
        torch.tensor([0, 1]), num_inference_steps=2, eta=1.0, generator=torch.Generator().manual_seed(0),
        with_log_probs=True,
    )  # fmt: skip
    assert torch.isfinite(trajectory.log_probs).all()


def test_guidance_scale_one_is_the_conditional_prediction():
    generator = build_tiny_generator()
    latents, t, labels = torch.randn(2, 1, 32, 32), torch.tensor(500), torch.tensor([0, 1])
    conditional = generator.model_output(latents, t, labels)
    torch.testing.assert_close(generator.guided_output(latents, t, labels, 1.0), conditional)
    null = generator.model_output(latents, t, torch.full_like(labels, generator.null_label))
    torch.testing.assert_close(generator.guided_output(latents, t, labels, 3.0), null + 3.0 * (conditional - null))


def test_pipeline_log_probs_equal_the_training_recomputation_at_every_step():
    generator = build_tiny_generator(num_classes=6, resolution=16)
    pipeline = IdentityDDPOPipeline(generator, base_model="tiny")
    labels = torch.tensor([0, 2, 5])
    embeds, negative = label_embeds(labels), label_embeds(torch.full_like(labels, generator.null_label))
    seeds = [torch.Generator().manual_seed(i) for i in range(3)]
    out = pipeline(embeds, negative, num_inference_steps=4, guidance_scale=2.5, eta=1.0, generator=seeds)
    assert len(out.latents) == 5 and len(out.log_probs) == 4
    for j, t in enumerate(pipeline.scheduler.timesteps):
        timesteps = t.repeat(3)
        output = guided_prediction(pipeline.unet, out.latents[j], timesteps, embeds, negative, 2.5, cfg=True)
        step = pipeline.scheduler_step(output, timesteps, out.latents[j], eta=1.0, prev_sample=out.latents[j + 1])
        torch.testing.assert_close(step.log_probs, out.log_probs[j], rtol=0, atol=1e-6)
        assert torch.isfinite(out.log_probs[j]).all()
    again = pipeline(embeds, negative, num_inference_steps=4, guidance_scale=2.5, eta=1.0,
                     generator=[torch.Generator().manual_seed(i) for i in range(3)])  # fmt: skip
    assert torch.equal(out.images, again.images)


def test_bfloat16_pipeline_samples():
    generator = build_tiny_generator(num_classes=6, resolution=16)
    generator.transformer.to(torch.bfloat16)
    pipeline = IdentityDDPOPipeline(generator, base_model="tiny")
    embeds = label_embeds(torch.tensor([1, 4]))
    out = pipeline(embeds, num_inference_steps=2, guidance_scale=2.0, eta=1.0, generator=torch.Generator())
    assert out.images.shape == (2, 1, 16, 16) and all(torch.isfinite(lp).all() for lp in out.log_probs)


def test_from_pretrained_dispatches_base_and_adapter_folders(tmp_path, tiny_base_dir):
    from rlsyn_trl.generators.adapter import replace_class_embedders, save_adapter

    base = IdentityGenerator.from_pretrained(tiny_base_dir)
    replace_class_embedders(base, ["a", "b"])
    save_adapter(base, tmp_path / "adapter", str(tiny_base_dir))
    loaded = IdentityGenerator.from_pretrained(tmp_path / "adapter")
    assert loaded.label_names == ["a", "b"] and loaded.source == str(tmp_path / "adapter")
    assert not list((tmp_path / "adapter").glob("*.tmp"))


def _package_imports(path: Path, package: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (also inside functions), as dotted names."""
    module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
    parts = module.split(".")
    if path.name == "__init__.py":
        parts = parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else []
            name = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name.removesuffix(".__init__") for name in found if name.startswith("rlsyn_trl")}


def test_no_two_modules_import_each_other_and_dit_never_imports_adapter():
    package = Path(rlsyn_trl.__file__).parent
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = _package_imports(path, package)
    assert "rlsyn_trl.generators.adapter" not in modules["rlsyn_trl.generators.dit"]
    pairs = [(a, b) for a, imports in modules.items() for b in imports if b in modules and a in modules[b] and a < b]
    assert not [pair for pair in pairs if "generators" in pair[0] + pair[1] or "model_sources" in pair[0] + pair[1]]


def tiny_latent_generator():
    """A 2-block latent DiT behind a 2-level VAE (16 px images, 4 x 8 x 8 latents)."""
    from diffusers import AutoencoderKL

    from rlsyn_trl.generators import build_pixel_dit, default_scheduler

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16)  # fmt: skip
    transformer = build_pixel_dit(3, resolution=8, channels=4, width=32, depth=2, heads=2, patch_size=2)
    return IdentityGenerator(transformer, default_scheduler(), ["a", "b", "c"], vae=vae)


def test_bfloat16_latent_generator_samples_and_computes_its_loss():
    generator = tiny_latent_generator()
    generator.transformer.to(torch.bfloat16)
    generator.vae.to(torch.bfloat16)
    images = generator.sample(["a", "c"], seed=0, num_inference_steps=2)
    assert images.shape == (2, 1, 16, 16) and images.dtype == torch.bfloat16 and torch.isfinite(images).all()
    loss = generator.denoising_loss(torch.rand(2, 1, 16, 16) * 2 - 1, torch.tensor([0, 1]))  # fp32 real images
    assert torch.isfinite(loss)


def test_the_ddpo_pipeline_freezes_the_vae_so_the_denoising_anchor_leaves_it_without_gradients():
    generator = tiny_latent_generator()
    IdentityDDPOPipeline(generator, base_model="tiny")
    assert not any(parameter.requires_grad for parameter in generator.vae.parameters())
    generator.denoising_loss(torch.rand(2, 1, 16, 16) * 2 - 1, torch.tensor([0, 2])).backward()
    assert all(parameter.grad is None for parameter in generator.vae.parameters())
    embedders = [p for n, p in generator.transformer.named_parameters() if "class_embedder" in n]
    assert embedders and all(parameter.grad is not None for parameter in embedders)


# -- reference-guided starts (SDEdit) -----------------------------------------------------------------------------
def _references(generator, strength, per_label: int = 2) -> ReferenceStart:
    """Two distinct random "real" images per label, in the generator's label space."""
    torch.manual_seed(11)
    labels = torch.arange(generator.num_classes).repeat_interleave(per_label)
    images = torch.rand(len(labels), *generator.latent_shape) * 2 - 1
    return ReferenceStart(images, labels, strength)


def _counting(denoise):
    calls = []

    def counted(latents, t, cond):
        calls.append((int(t), latents.shape[0]))
        return denoise(latents, t, cond)

    return counted, calls


def test_strength_one_is_the_pure_noise_chain_bit_for_bit():
    generator = build_tiny_generator(resolution=16)
    labels = ["s1", "s2", "s3"]
    plain = generator.sample(labels, seed=5, num_inference_steps=4, eta=1.0)
    from_reference = generator.sample(
        labels, seed=5, num_inference_steps=4, eta=1.0, reference=_references(generator, (1.0, 1.0))
    )
    assert torch.equal(plain, from_reference)


@pytest.mark.parametrize("strength, steps", [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4), (0.2, 0)])
def test_truncated_chain_runs_the_expected_steps_deterministically(strength, steps):
    generator = build_tiny_generator(resolution=16)
    assert start_step(strength, 4) == 4 - steps
    denoise, calls = _counting(generator.model_output)
    references = torch.rand(2, *generator.latent_shape) * 2 - 1
    labels = torch.tensor([0, 1])

    def run(seed):
        return ddim_sample(denoise, generator.scheduler, labels, torch.full_like(labels, generator.null_label),
                           generator.latent_shape, num_inference_steps=4, guidance_scale=1.0, eta=1.0,
                           generator=torch.Generator().manual_seed(seed), init_latents=references,
                           start_steps=torch.full((2,), start_step(strength, 4)), return_chain=True,
                           return_log_probs=True)  # fmt: skip

    first = run(0)
    ran = [t for t, _ in calls]
    assert ran == generator.scheduler.timesteps[4 - steps :].tolist()  # the last `steps` timesteps, in order
    assert torch.equal(first.latents, run(0).latents)
    assert sum(bool((lp != 0).all()) for lp in first.log_probs) == steps
    if steps == 0:  # nothing left to denoise: the reference itself
        assert torch.equal(first.latents, references)
    elif steps < 4:
        assert not torch.equal(first.latents, run(1).latents)
        # the chain starts from the reference noised to the first step that runs
        t = generator.scheduler.timesteps[4 - steps]
        alpha = generator.scheduler.alphas_cumprod[t]
        noise = randn_tensor((2, *generator.latent_shape), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(first.chain[0], alpha.sqrt() * references + (1 - alpha).sqrt() * noise)


def test_mixed_starts_in_a_batch_match_each_sample_alone():
    generator = build_tiny_generator(resolution=16)
    labels, starts = torch.tensor([0, 1, 2]), torch.tensor([0, 2, 3])
    references = torch.rand(3, *generator.latent_shape) * 2 - 1
    null = torch.full_like(labels, generator.null_label)

    def run(rows):
        return ddim_sample(generator.model_output, generator.scheduler, labels[rows], null[rows],
                           generator.latent_shape, num_inference_steps=4, guidance_scale=2.0, eta=1.0,
                           generator=[torch.Generator().manual_seed(10 + i) for i in rows],
                           init_latents=references[rows], start_steps=starts[rows]).latents  # fmt: skip

    batch = run([0, 1, 2])
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], run([i]), rtol=0, atol=1e-6)


def test_a_strength_range_draws_per_sample_from_the_seed():
    generator = build_tiny_generator(resolution=16)
    reference = _references(generator, (0.3, 0.9))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3] * 4)
    draw = reference.draw(labels, 10, reference_rng(7))
    again = reference.draw(labels, 10, reference_rng(7))
    assert torch.equal(draw.indices, again.indices) and torch.equal(draw.strengths, again.strengths)
    assert ((draw.strengths >= 0.3) & (draw.strengths <= 0.9)).all() and draw.strengths.unique().numel() > 10
    assert torch.equal(reference.labels[draw.indices], labels)  # always one of the sample's own identity's images
    assert reference.labels[draw.indices].tolist() == labels.tolist() and len(draw.indices.unique()) == 8
    assert draw.start_steps.tolist() == [start_step(s, 10) for s in draw.strengths.tolist()]
    a = generator.sample(labels[:4], seed=3, num_inference_steps=4, eta=1.0, reference=reference)
    b = generator.sample(labels[:4], seed=3, num_inference_steps=4, eta=1.0, reference=reference)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no real training image"):
        ReferenceStart(reference.images[:2], reference.labels[:2], (0.5, 0.5)).draw(torch.tensor([3]), 4,
                                                                                    reference_rng(0))  # fmt: skip


def test_pipeline_log_probs_over_the_truncated_chain_equal_the_recomputation():
    generator = build_tiny_generator(num_classes=6, resolution=16)
    pipeline = IdentityDDPOPipeline(generator, base_model="tiny")
    labels, starts = torch.tensor([0, 2, 5]), torch.tensor([2, 2, 1])
    embeds, negative = label_embeds(labels), label_embeds(torch.full_like(labels, generator.null_label))
    references = torch.rand(3, *generator.latent_shape) * 2 - 1
    out = pipeline(embeds, negative, num_inference_steps=4, guidance_scale=2.5, eta=1.0,
                   generator=[torch.Generator().manual_seed(i) for i in range(3)], init_latents=references,
                   start_steps=starts)  # fmt: skip
    assert len(out.latents) == 5 and len(out.log_probs) == 4
    for j, t in enumerate(pipeline.scheduler.timesteps):
        taken = starts <= j
        assert torch.equal(out.log_probs[j] != 0, taken)
        assert torch.equal(out.latents[j + 1][~taken], out.latents[j][~taken])  # held until the start step
        rows = taken.nonzero().squeeze(1)
        if not len(rows):
            continue
        timesteps = t.repeat(len(rows))
        output = guided_prediction(pipeline.unet, out.latents[j][rows], timesteps, embeds[rows], negative[rows], 2.5,
                                   cfg=True)  # fmt: skip
        step = pipeline.scheduler_step(output, timesteps, out.latents[j][rows], eta=1.0,
                                       prev_sample=out.latents[j + 1][rows])  # fmt: skip
        torch.testing.assert_close(step.log_probs, out.log_probs[j][rows], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), ("0.6", (0.6, 0.6)), (0.6, (0.6, 0.6)), ("0.5,0.8", (0.5, 0.8)), ([0.5, 0.8], (0.5, 0.8)),
     (1, (1.0, 1.0))],
)  # fmt: skip
def test_reference_strength_forms(value, expected):
    assert parse_reference_strength(value) == expected


@pytest.mark.parametrize("value", [0, 1.5, "0.8,0.5", "a", [0.1, 0.2, 0.3], -0.2, "0.5,"])
def test_bad_reference_strength_names_the_flag(value):
    with pytest.raises(SettingsError, match="--reference_strength"):
        parse_reference_strength(value)


def test_a_guidance_interval_guides_only_the_steps_whose_noise_level_lies_in_it():
    """(0, 1] is guidance at every step, an interval holding no step is the conditional model alone, and (0.5, 1]
    guides the noisier steps only: its chain equals full guidance up to the first clean-half step, then differs."""
    generator = build_tiny_generator(resolution=16)
    labels = ["s1", "s2"]

    def sample(interval, scale=3.0):
        return generator.sample(labels, seed=2, num_inference_steps=4, guidance_scale=scale, eta=1.0,
                                guidance_interval=interval)  # fmt: skip

    everywhere, conditional, noisy_half = sample(None), sample(None, scale=1.0), sample((0.5, 1.0))
    assert torch.equal(sample((0.0, 1.0)), everywhere)
    assert torch.equal(sample((0.0, 0.2)), conditional)  # timesteps 999, 749, 499, 249: none at or under 0.2 T
    assert not torch.equal(noisy_half, everywhere) and not torch.equal(noisy_half, conditional)
    denoise, calls = _counting(generator.model_output)
    label_ids = torch.tensor([0, 1])
    ddim_sample(denoise, generator.scheduler, label_ids, torch.full_like(label_ids, generator.null_label),
                generator.latent_shape, num_inference_steps=4, guidance_scale=3.0, guidance_interval=(0.5, 1.0),
                generator=torch.Generator().manual_seed(0))  # fmt: skip
    # [null; cond] in one pass (4 rows) where t / T lies in (0.5, 1], the conditional rows alone (2) elsewhere
    assert calls == [(999, 4), (749, 4), (499, 2), (249, 2)]


@pytest.mark.parametrize(
    "value, expected", [(None, None), ("0.5,1", (0.5, 1.0)), ([0, 0.6], (0.0, 0.6)), ("null", None)]
)
def test_guidance_interval_forms(value, expected):
    assert parse_guidance_interval(value) == expected


@pytest.mark.parametrize("value", ["0.5", "1,0.5", "0.5,0.5", "-0.1,0.5", "0.5,1.2", "a,b", [0.1, 0.2, 0.3]])
def test_bad_guidance_interval_names_the_flag_and_the_fix(value):
    with pytest.raises(SettingsError, match='--guidance_interval .*"lo,hi"'):
        parse_guidance_interval(value)
