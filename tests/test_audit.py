"""The memorisation audit: thresholds from same-identity pairs, the combination rules, copies flagged, others not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlsyn_trl.audit import (
    AuditThresholds,
    audit_images,
    calibrate_thresholds,
    feature_distances,
    memorization_rates,
    pixel_distances,
    same_identity_distances,
)
from rlsyn_trl.data import dataset_to_tensors

torch.set_num_threads(1)


def pooled_features(images: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for the identity encoder: 4x4 average pooling, centred, L2-normalised."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
    return torch.nn.functional.normalize(pooled - pooled.mean(dim=1, keepdim=True), dim=1)


@pytest.fixture(scope="module")
def orl(orl_private, orl_public):
    """Private train/test and public ORL images at 32 px, with their stand-in features."""
    sets = {}
    for name, split in (
        ("train", orl_private["train"]),
        ("test", orl_private["test"]),
        ("public", orl_public["train"]),
    ):
        images, labels = dataset_to_tensors(split, 32)
        sets[name] = (images, pooled_features(images), labels)
    return sets


def test_distances_and_same_identity_pairs():
    images = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]], [[[1.0, -1.0]]]])
    assert pixel_distances(images, images)[0].tolist() == pytest.approx([0.0, 1.0, 1.0])  # RMS, not the L2 norm
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert feature_distances(features, features)[0, 1].item() == pytest.approx(2**0.5)
    matrix = torch.arange(16.0).reshape(4, 4)
    # Pairs (0, 1) and (2, 3) only: the diagonal and cross-identity pairs are left out.
    assert same_identity_distances(matrix, torch.tensor([0, 0, 1, 1])).tolist() == [1.0, 11.0]


def test_thresholds_are_the_percentile_of_private_same_identity_pairs(orl):
    images, features, labels = orl["train"]
    thresholds = calibrate_thresholds(images, features, labels, percentile=5.0)
    assert thresholds.source == "private" and thresholds.num_pairs == 20  # 20 identities x 2 shots
    pairs = same_identity_distances(pixel_distances(images, images), labels).numpy()
    assert thresholds.pixel == pytest.approx(np.percentile(pairs, 5))
    pairs = same_identity_distances(feature_distances(features, features), labels).numpy()
    assert thresholds.feature == pytest.approx(np.percentile(pairs, 5))


def test_one_shot_thresholds_come_from_the_public_identities(orl):
    images, features, labels = orl["train"]
    first = torch.tensor([labels[:i].eq(label).sum() == 0 for i, label in enumerate(labels)])
    one_shot = images[first], features[first], labels[first]
    with pytest.raises(ValueError, match="PUBLIC identities"):
        calibrate_thresholds(*one_shot)
    public_images, public_features, public_labels = orl["public"]
    thresholds = calibrate_thresholds(
        *one_shot, public_images=public_images, public_features=public_features, public_labels=public_labels
    )
    assert thresholds.source == "public" and thresholds.num_pairs == 20 * 45
    forced = calibrate_thresholds(
        images,
        features,
        labels,
        public_images=public_images,
        public_features=public_features,
        public_labels=public_labels,
        source="public",
    )
    assert forced == thresholds


def test_exact_copies_are_all_flagged_and_different_images_are_not(orl):
    images, features, labels = orl["train"]
    thresholds = calibrate_thresholds(images, features, labels)
    copies = audit_images(images, pooled_features(images), images, features, thresholds)
    assert copies.memorized.all() and copies.under_pixel.all() and copies.under_feature.all()
    assert (copies.pixel_distance == 0).all() and (copies.feature_distance == 0).all()
    assert torch.equal(copies.pixel_index, torch.arange(len(images)))
    chunked = audit_images(images, pooled_features(images), images, features, thresholds, chunk_size=7)
    assert torch.equal(chunked.pixel_distance, copies.pixel_distance)
    assert torch.equal(chunked.feature_index, copies.feature_index)

    # Clearly different images: flat grey fields and noise, far from every face in both spaces.
    generator = torch.Generator().manual_seed(0)
    others = torch.cat([torch.full((4, 1, 32, 32), 0.8), torch.rand(4, 1, 32, 32, generator=generator) * 2 - 1])
    noise_features = torch.nn.functional.normalize(torch.randn(8, features.shape[1], generator=generator), dim=1)
    different = audit_images(others, noise_features, images, features, thresholds)
    assert not different.memorized.any()
    assert (different.pixel_distance > 2 * thresholds.pixel).all()


def test_held_out_real_photos_give_a_small_but_nonzero_floor(orl):
    """Fresh real photos fall under a 5th-percentile threshold now and then (5-12% on ORL): that is the floor."""
    images, features, labels = orl["train"]
    test_images, test_features, test_labels = orl["test"]
    public_images, public_features, public_labels = orl["public"]
    thresholds = calibrate_thresholds(
        images,
        features,
        labels,
        public_images=public_images,
        public_features=public_features,
        public_labels=public_labels,
        source="public",
        criterion="pixel",
    )
    rates = memorization_rates(
        audit_images(test_images, test_features, images, features, thresholds),
        test_labels,
        [f"s{i}" for i in range(21, 41)],
    )
    assert 0 < rates["rate"] < 0.3


@pytest.mark.parametrize(
    ("criterion", "expected"),
    [
        ("either", [True, True, True, False]),
        ("both", [True, False, False, False]),
        ("pixel", [True, True, False, False]),
        ("feature", [True, False, True, False]),
    ],
)
def test_criteria_combine_the_two_spaces(criterion, expected):
    thresholds = AuditThresholds(
        pixel=0.5, feature=0.5, percentile=5, criterion=criterion, source="private", num_pairs=1
    )
    references = torch.zeros(1, 1, 1, 1)
    # Sample i is under the pixel threshold for i in {0, 1} and under the feature threshold for i in {0, 2}.
    images = torch.tensor([0.1, 0.2, 0.9, 0.9]).reshape(4, 1, 1, 1)
    features = torch.tensor([[0.1], [0.9], [0.2], [0.9]])
    result = audit_images(images, features, references, torch.zeros(1, 1), thresholds)
    assert result.memorized.tolist() == expected


def test_rates_per_identity_and_overall():
    thresholds = AuditThresholds(pixel=0.5, feature=0.0, percentile=5, criterion="pixel", source="private", num_pairs=1)
    images = torch.tensor([0.0, 0.0, 0.0, 1.0]).reshape(4, 1, 1, 1)
    result = audit_images(images, torch.ones(4, 1), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1), thresholds)
    rates = memorization_rates(result, torch.tensor([0, 0, 2, 2]), ["a", "b", "c"])
    assert rates["rate"] == 0.75 and rates["count"] == 3 and rates["total"] == 4
    assert rates["per_identity"] == {"a": 1.0, "c": 0.5}
    assert rates["pixel_rate"] == 0.75 and rates["feature_rate"] == 0.0


def test_invalid_settings_are_refused(orl):
    images, features, labels = orl["train"]
    with pytest.raises(ValueError, match="percentile"):
        calibrate_thresholds(images, features, labels, percentile=0)
    with pytest.raises(ValueError, match="source"):
        calibrate_thresholds(images, features, labels, source="mixed")
    with pytest.raises(ValueError, match="criterion"):
        calibrate_thresholds(images, features, labels, criterion="any")
