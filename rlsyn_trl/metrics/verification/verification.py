"""10-fold face verification accuracy as a local ``evaluate`` module.

Load it with ``rlsyn_trl.metrics.load_metric("verification")``; the math is
:func:`rlsyn_trl.metrics.functional.verification_accuracy`.
"""

import datasets
import evaluate
import numpy as np

from rlsyn_trl.metrics.functional import pair_similarity, verification_accuracy

_DESCRIPTION = """k-fold verification accuracy (LFW protocol, also used for AgeDB-30, CFP-FP, CALFW, CPLFW and RFW):
for each fold, the similarity threshold with the best accuracy on the other folds is applied to the held-out fold.
Reports the mean and standard deviation of the fold accuracies and the mean threshold."""

_CITATION = (
    "Huang et al., Labeled Faces in the Wild: A Database for Studying Face Recognition in Unconstrained "
    "Environments, 2007."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: per pair, a similarity score (higher means same person; negate distances), or the pair's two
        embeddings ``[embedding_a, embedding_b]``, compared by cosine similarity.
    references: per pair, whether both images show the same person.
    folds: optional fold of each pair (e.g. a dataset's ``fold`` column); by default the pairs' order is cut into
        ``num_folds`` contiguous folds, as the benchmarks' pair files are laid out.
    num_folds: number of folds when ``folds`` is not given, default 10.
Returns:
    accuracy: mean held-out accuracy over the folds.
    accuracy_std: standard deviation of the fold accuracies.
    threshold: mean of the per-fold similarity thresholds.
Example:
    >>> from rlsyn_trl.metrics import load_metric
    >>> metric = load_metric("verification")
    >>> metric.compute(predictions=[0.9, 0.2, 0.8, 0.1], references=[True, False, True, False], num_folds=2)
    {'accuracy': 1.0, 'accuracy_std': 0.0, 'threshold': 0.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Verification(evaluate.Metric):
    """k-fold verification accuracy from similarity scores or embedding pairs."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("float64"), "references": datasets.Value("bool")}),
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                        "references": datasets.Value("bool"),
                    }
                ),
            ],
        )

    def _compute(self, predictions, references, folds=None, num_folds=10):
        predictions = np.asarray(predictions, dtype=np.float64)
        if predictions.ndim == 3:
            predictions = pair_similarity(predictions[:, 0], predictions[:, 1])
        return verification_accuracy(predictions, references, folds=folds, num_folds=num_folds)
