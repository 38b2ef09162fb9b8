import json

import torch

from rlsyn_trl.encoders import IdentityEncoder
from rlsyn_trl.generators import IdentityGenerator
from rlsyn_trl.priors import PriorConfig, train_priors


def tiny_prior_config(output_dir, **overrides) -> PriorConfig:
    values = dict(
        output_dir=str(output_dir),
        resolution=16,
        width=32,
        depth=2,
        heads=2,
        patch_size=4,
        generator_steps=4,
        generator_batch_size=8,
        warmup_steps=1,
        encoder_steps=4,
        encoder_batch_size=8,
        encoder_widths=[8, 16],
        embedding_size=16,
        checkpoint_every=2,
        grid_inference_steps=2,
        grid_per_identity=1,
        use_lfw_faces=True,
    )
    values.update(overrides)
    return PriorConfig(**values)


def test_short_prior_run_writes_loadable_models(tmp_path):
    summary = train_priors(tiny_prior_config(tmp_path))
    generator = IdentityGenerator.from_pretrained(tmp_path / "generator")
    encoder = IdentityEncoder.from_pretrained(tmp_path / "encoder")
    assert generator.label_names == [f"s{i}" for i in range(1, 21)] and generator.resolution == 16
    assert encoder.encode_batched(torch.zeros(2, 1, 16, 16)).norm(dim=1).allclose(torch.ones(2), atol=1e-5)
    assert (tmp_path / "prior_samples.png").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["real_face_detection_rate"] > 0.3
    assert 0 <= summary["self_consistency"] <= 1 and 0 <= summary["face_detection_rate"] <= 1


def test_resume_continues_from_checkpoint_and_matches_uninterrupted(tmp_path):
    full = tmp_path / "full"
    train_priors(tiny_prior_config(full, train_encoder=False))
    split = tmp_path / "split"
    train_priors(tiny_prior_config(split, train_encoder=False, generator_steps=4, max_minutes=0.0))
    checkpoints = sorted(p.name for p in (split / "checkpoints" / "generator").iterdir())
    assert checkpoints == ["step-1"]  # stopped after the first step by the time budget
    train_priors(tiny_prior_config(split, train_encoder=False, resume=True))
    a = IdentityGenerator.from_pretrained(full / "generator").transformer.state_dict()
    b = IdentityGenerator.from_pretrained(split / "generator").transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
