"""Person re-identification retrieval metric (mAP, CMC rank-k) as a local ``evaluate`` module.

Load it with ``rlsyn_trl.metrics.load_metric("reid")``; the math is
:func:`rlsyn_trl.metrics.functional.reid_metrics`, which is also the faster way for a large gallery (``evaluate``
first writes every distance row to an Arrow table).
"""

import datasets
import evaluate

from rlsyn_trl.metrics.functional import reid_metrics

_DESCRIPTION = """mAP and CMC rank-k of a query x gallery distance matrix under the Market-1501 protocol: gallery
images of the query's person taken by the query's camera, and junk images (negative person id), are not ranked;
queries without any remaining true match are skipped. Used for Market-1501 and CUHK03-NP."""

_CITATION = "Zheng et al., Scalable Person Re-identification: A Benchmark, ICCV 2015."

_KWARGS_DESCRIPTION = """
Args:
    distances: one row per query, the distance to every gallery image (lower means more similar).
    query_ids: person id of each query.
    query_cameras: camera id of each query.
    gallery_ids: person id of each gallery image (negative: junk, never ranked).
    gallery_cameras: camera id of each gallery image.
    ranks: the k of the CMC rank-k scores to report, default (1, 5, 10).
Returns:
    mAP: mean average precision over the queries that have a true match.
    rank<k>: fraction of those queries with a true match among the k nearest gallery images.
Example:
    >>> from rlsyn_trl.metrics import load_metric
    >>> metric = load_metric("reid")
    >>> metric.compute(distances=[[0.1, 0.9], [0.8, 0.2]], query_ids=[1, 2], query_cameras=[1, 1],
    ...                gallery_ids=[1, 2], gallery_cameras=[2, 2], ranks=[1])
    {'mAP': 1.0, 'rank1': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Reid(evaluate.Metric):
    """Market-1501-protocol mAP and CMC; queries are the examples, the gallery is passed to ``compute``."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "distances": datasets.Sequence(datasets.Value("float64")),
                    "query_ids": datasets.Value("int64"),
                    "query_cameras": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, distances, query_ids, query_cameras, gallery_ids, gallery_cameras, ranks=(1, 5, 10)):
        return reid_metrics(distances, query_ids, gallery_ids, query_cameras, gallery_cameras, ranks)
