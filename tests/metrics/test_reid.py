"""ReID mAP / CMC against hand-computed rankings, and the packaged ``evaluate`` module that wraps them."""

import numpy as np
import pytest

from rlsyn_trl.metrics import available_metrics, load_metric, reid_metrics


@pytest.fixture(scope="module")
def reid_module():
    """Loaded once: the first ``evaluate`` load pays for ``import evaluate`` (which imports transformers)."""
    return load_metric("reid", keep_in_memory=True)


def test_average_precision_of_a_known_ranking():
    # Ranked gallery: person 2, person 1, person 3, person 1 -> hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2.
    result = reid_metrics([[0.1, 0.2, 0.3, 0.4]], [1], [2, 1, 3, 1], [1], [2, 2, 2, 3])
    assert result == pytest.approx({"mAP": 0.5, "rank1": 0.0, "rank5": 1.0, "rank10": 1.0})


def test_same_camera_same_person_is_removed():
    distances = [[0.0, 0.1, 0.2, 0.3]]
    gallery_ids, gallery_cameras = [1, 3, 2, 1], [1, 1, 2, 2]
    # The nearest image is the query's person seen by the query's camera: not ranked. Another person seen by the
    # same camera stays a negative, so the ranking is 3, 2, 1: one hit at rank 3.
    result = reid_metrics(distances, [1], gallery_ids, [1], gallery_cameras, ranks=(1, 3))
    assert result == pytest.approx({"mAP": 1 / 3, "rank1": 0.0, "rank3": 1.0})
    # From another camera the same gallery image is a true match at rank 1.
    result = reid_metrics(distances, [1], gallery_ids, [4], gallery_cameras, ranks=(1, 3))
    assert result == pytest.approx({"mAP": (1 / 1 + 2 / 4) / 2, "rank1": 1.0, "rank3": 1.0})


def test_junk_is_ignored_and_queries_without_match_are_skipped():
    distances = [[0.0, 0.5, 0.9], [0.0, 0.2, 0.3]]
    gallery_ids, gallery_cameras = [-1, 5, 6], [2, 2, 2]
    # Query 1 (person 5): the junk image in front does not count -> AP 1. Query 2 (person 6, camera 2): its only
    # match is from its own camera, so it is skipped rather than scored 0.
    result = reid_metrics(distances, [5, 6], gallery_ids, [1, 2], gallery_cameras)
    assert result == pytest.approx({"mAP": 1.0, "rank1": 1.0, "rank5": 1.0, "rank10": 1.0})
    with pytest.raises(ValueError, match="No query has a true match"):
        reid_metrics([[0.3]], [6], [6], [2], [2])


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[num_query, num_gallery\] = \[2, 3\]"):
        reid_metrics(np.zeros((3, 2)), [1, 2], [1, 2, 3], [1, 1], [2, 2, 2])
    with pytest.raises(ValueError, match="ranks must be positive"):
        reid_metrics([[0.1]], [1], [1], [1], [2], ranks=(0,))


def test_evaluate_module_matches_functional(reid_module):
    rng = np.random.default_rng(0)
    distances = rng.random((6, 15))
    query_ids, gallery_ids = rng.integers(0, 3, 6), rng.integers(0, 3, 15)
    query_cameras, gallery_cameras = rng.integers(1, 3, 6), rng.integers(1, 3, 15)
    assert "reid" in available_metrics()
    result = reid_module.compute(
        distances=distances,
        query_ids=query_ids,
        query_cameras=query_cameras,
        gallery_ids=gallery_ids,
        gallery_cameras=gallery_cameras,
        ranks=[1, 5],
    )
    assert result == pytest.approx(
        reid_metrics(distances, query_ids, gallery_ids, query_cameras, gallery_cameras, ranks=(1, 5))
    )
