"""Closed-set identification accuracy: the share of probe images assigned to their true identity.

A local, self-contained ``evaluate`` module, loaded by path with ``rlsyn_trl.metrics.load_metric(
"identification_accuracy")`` so that evaluation works offline (``evaluate.load("accuracy")`` needs the Hub).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Identification accuracy = (number of probes whose predicted identity equals their true identity) / (number of
probes). Predictions are identity indices, e.g. the arg-max of a recognizer's class scores or the label of the
nearest gallery embedding.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted identity index of each probe image.
    references (`list` of `int`): true identity index of each probe image.
Returns:
    accuracy (`float`): in [0, 1].
Examples:
    >>> from rlsyn_trl.metrics import load_metric
    >>> metric = load_metric("identification_accuracy")
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""

_CITATION = (
    "Jia et al., Reinforcement-Guided Synthetic Data Generation for Privacy-Sensitive Identity Recognition, "
    "CVPR 2026 (arXiv 2604.07884): k-shot identification on held-out images of the private identities."
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IdentificationAccuracy(evaluate.Metric):
    """Fraction of probes identified correctly (closed set, top-1)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.size == 0:
            raise ValueError("identification_accuracy needs at least one probe; got none.")
        return {"accuracy": float(np.mean(predictions == references))}
