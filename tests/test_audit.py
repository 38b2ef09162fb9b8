"""The memorisation audit: thresholds from same-identity pairs, the combination rules, copies flagged, others not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlsyn_trl.data import dataset_to_tensors
from rlsyn_trl.generation.audit import (
    AuditThresholds,
    audit_images,
    calibrate_thresholds,
    feature_distances,
    grouped_same_identity_distances,
    memorization_rates,
    nearest_neighbours,
    pixel_distances,
    same_identity_distances,
)

torch.set_num_threads(1)


def exact_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """float64 pairwise distances without the matrix-product shortcut: the reference the fp32 audit is held to."""
    return torch.cdist(queries.double(), references.double(), compute_mode="donot_use_mm_for_euclid_dist")


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


def test_fp32_products_give_exact_zero_for_copies_and_float64_neighbours_otherwise():
    """At 112 px the product form's cancellation residue is far above 0 (and can go negative): the audit clamps it
    and recomputes near-zero pairs directly, so a copy measures exactly 0, never NaN, at any chunk size."""
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(30, 3, 112, 112, generator=generator) * 2 - 1
    others = torch.rand(9, 3, 112, 112, generator=generator) * 2 - 1
    queries = torch.cat([real[[4, 17, 29]], others, real[:1] + 0.02])
    rows = real.flatten(1)
    residue = rows.pow(2).sum(1) * 2 - 2 * (rows * rows).sum(1)  # what |q|^2 + |r|^2 - 2 q.r leaves in fp32
    assert rows.pow(2).sum(1).min() > 1e4  # large norms: the regime where fp32 cancellation matters
    reference_distance, reference_index = exact_distances(queries.flatten(1), rows).min(dim=1)
    for chunk_size in (1, 5, 64):
        distance, index = nearest_neighbours(queries, real, chunk_size=chunk_size)
        assert distance.dtype == torch.float32 and not distance.isnan().any()
        assert distance[:3].tolist() == [0.0, 0.0, 0.0] and index[:3].tolist() == [4, 17, 29]
        assert torch.equal(index, reference_index)
        assert torch.allclose(distance.double(), reference_distance, rtol=1e-5)
    square = pixel_distances(real, real)
    assert (square.diagonal() == 0).all() and not square.isnan().any()
    assert residue.abs().max() < 1.0  # sanity of the stand-in: the residue is rounding, not a bug in the data
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_neighbours(queries, real, chunk_size=0)


def test_per_identity_pairs_match_the_square_matrix(orl):
    images, features, labels = orl["train"]
    public_images, _, public_labels = orl["public"]
    for values, names in ((images, labels), (public_images, public_labels)):
        grouped = grouped_same_identity_distances(values, names, pixel_distances).sort().values
        square = same_identity_distances(exact_distances(values.flatten(1), values.flatten(1)) / 32, names)
        assert torch.allclose(grouped.double(), square.sort().values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("criterion", "expected"),
    [
        ("either", ["pixel+feature", "pixel", "feature", ""]),
        ("both", ["pixel+feature", "", "", ""]),
        ("pixel", ["pixel", "pixel", "", ""]),
        ("feature", ["feature", "", "feature", ""]),
    ],
)
def test_memorized_by_names_the_spaces_that_flagged(criterion, expected):
    thresholds = AuditThresholds(
        pixel=0.5, feature=0.5, percentile=5, criterion=criterion, source="private", num_pairs=1
    )
    images = torch.tensor([0.1, 0.2, 0.9, 0.9]).reshape(4, 1, 1, 1)
    features = torch.tensor([[0.1], [0.9], [0.2], [0.9]])
    result = audit_images(images, features, torch.zeros(1, 1, 1, 1), torch.zeros(1, 1), thresholds)
    assert result.memorized_by() == expected


def test_thresholds_are_the_percentile_of_private_same_identity_pairs(orl):
    images, features, labels = orl["train"]
    thresholds = calibrate_thresholds(images, features, labels, percentile=5.0)
    assert thresholds.source == "private" and thresholds.num_pairs == 20  # 20 identities x 2 shots
    # Against float64 distances of the whole square matrix: the per-identity fp32 products agree to 1e-5.
    pairs = same_identity_distances(exact_distances(images.flatten(1), images.flatten(1)) / 32, labels).numpy()
    assert thresholds.pixel == pytest.approx(np.percentile(pairs, 5), rel=1e-5)
    pairs = same_identity_distances(exact_distances(features, features), labels).numpy()
    assert thresholds.feature == pytest.approx(np.percentile(pairs, 5), rel=1e-5)


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
