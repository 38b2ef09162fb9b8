import torch

from rlsyn_trl.encoders import IdentityEncoder, IdentityEncoderConfig, load_encoder


def tiny_encoder() -> IdentityEncoder:
    torch.manual_seed(0)
    return IdentityEncoder(IdentityEncoderConfig(image_size=16, widths=[8, 16], embedding_size=12)).eval()


def test_features_are_unit_norm_and_mirror_invariant():
    encoder = tiny_encoder()
    images = torch.rand(5, 1, 16, 16) * 2 - 1
    features = encoder.encode_batched(images, batch_size=2)
    assert features.shape == (5, 12)
    assert torch.allclose(features.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(features, encoder.encode_batched(images.flip(-1)), atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    encoder = tiny_encoder()
    encoder.save_pretrained(tmp_path / "enc")
    loaded = load_encoder(str(tmp_path / "enc"))
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    assert not loaded.training
    assert torch.equal(encoder.encode_batched(images), loaded.encode_batched(images))
