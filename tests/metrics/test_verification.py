"""10-fold verification accuracy against hand-computed pairs, and the packaged ``evaluate`` modules' loading."""

import textwrap

import numpy as np
import pytest

from rlsyn_trl import metrics
from rlsyn_trl.metrics import best_threshold, fold_ids, load_metric, pair_similarity, verification_accuracy


@pytest.fixture(scope="module")
def verification_module():
    """Loaded once: the first ``evaluate`` load pays for ``import evaluate`` (which imports transformers)."""
    return load_metric("verification", keep_in_memory=True)


def test_fold_ids_cut_like_kfold():
    assert np.bincount(fold_ids(6000)).tolist() == [600] * 10
    assert fold_ids(23).tolist() == [f for f, chunk in enumerate(np.array_split(np.arange(23), 10)) for _ in chunk]
    with pytest.raises(ValueError, match="one item per fold"):
        fold_ids(9)


def test_best_threshold_by_hand():
    # Sorted: 0.1 diff, 0.35 same, 0.4 diff, 0.8 same. Thresholds 0.225 and 0.6 both get 3 of 4 right; the lower wins.
    assert best_threshold([0.8, 0.4, 0.35, 0.1], [True, False, True, False]) == pytest.approx((0.225, 0.75))
    assert best_threshold([0.9, 0.1, 0.7], [True, False, True]) == pytest.approx((0.4, 1.0))
    assert best_threshold([0.5, 0.5], [True, True]) == pytest.approx((0.5, 1.0))  # everything "same"


def test_held_out_folds_by_hand():
    # 10 folds of (same 0.9, different 0.1), except that fold 3's different pair scores 0.95. Each fold's threshold,
    # learnt on the other nine, is 0.5: fold 3 gets 1 of 2 right, the others 2 of 2.
    scores, issame = np.tile([0.9, 0.1], 10), np.tile([True, False], 10)
    scores[7] = 0.95
    result = verification_accuracy(scores, issame)
    assert result == pytest.approx({"accuracy": 0.95, "accuracy_std": 0.15, "threshold": 0.5})
    # Explicit folds (here: all of fold 3's pairs alone in fold 1) override the order-based cut.
    folds = np.where(np.arange(20) // 2 == 3, 1, 0)
    assert verification_accuracy(scores, issame, folds=folds)["accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_input_errors():
    with pytest.raises(ValueError, match="Got 3 scores for 2 issame"):
        verification_accuracy([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="at least 2 distinct folds"):
        verification_accuracy([0.1, 0.2], [True, False], folds=[0, 0])
    with pytest.raises(ValueError, match="all zeros"):
        pair_similarity([[0.0, 0.0]], [[1.0, 0.0]])


def test_evaluate_module_scores_and_embeddings(verification_module):
    metric = verification_module
    scores, issame = [0.9, 0.2, 0.8, 0.1], [True, False, True, False]
    assert metric.compute(predictions=scores, references=issame, num_folds=2) == pytest.approx(
        {"accuracy": 1.0, "accuracy_std": 0.0, "threshold": 0.5}
    )
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(20, 2, 8))
    labels = rng.random(20) < 0.5
    expected = verification_accuracy(pair_similarity(embeddings[:, 0], embeddings[:, 1]), labels)
    assert metric.compute(predictions=embeddings, references=labels) == pytest.approx(expected)


def test_load_metric_finds_any_module_folder(verification_module, tmp_path, monkeypatch):
    module = tmp_path / "identification_accuracy"
    module.mkdir()
    (module / "identification_accuracy.py").write_text(
        textwrap.dedent(
            """
            import datasets
            import evaluate


            class IdentificationAccuracy(evaluate.Metric):
                def _info(self):
                    value = datasets.Value("int64")
                    features = datasets.Features({"predictions": value, "references": value})
                    return evaluate.MetricInfo(description="", citation="", features=features)

                def _compute(self, predictions, references):
                    return {"accuracy": sum(p == r for p, r in zip(predictions, references)) / len(references)}
            """
        )
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "draft.py").write_text("")
    monkeypatch.setattr(metrics, "METRICS_DIR", tmp_path)
    assert metrics.available_metrics() == ["identification_accuracy"]
    metric = load_metric("identification_accuracy", keep_in_memory=True)
    assert metric.compute(predictions=[1, 2, 3], references=[1, 2, 0]) == {"accuracy": pytest.approx(2 / 3)}
    with pytest.raises(FileNotFoundError, match=r"No packaged metric 'accuracy'.*\['identification_accuracy'\]"):
        load_metric("accuracy")
