"""``rlsyn-trl inspect``: a local app to look at a synthetic dataset before publishing it.

For an identity it shows the real training photos beside the synthetic samples with their reward terms, identity
consistency, face detection and memorisation verdict, sorted and filtered by any score; "flagged only" sets each
flagged sample beside the real image it resembles, with the distance against the threshold. The data logic lives in
``data`` (no Gradio needed); ``app`` lays it out with the optional Gradio extra (``pip install 'rlsyn-trl[app]'``).
"""

from .data import (
    FLAG_COLUMNS,
    SCORE_COLUMNS,
    Inspection,
    NearestPair,
    identity_names,
    load_inspection,
    nearest_pairs,
    real_photos,
    sample_caption,
    score_table,
    select_samples,
    summary_markdown,
)

__all__ = [
    "FLAG_COLUMNS",
    "SCORE_COLUMNS",
    "Inspection",
    "NearestPair",
    "identity_names",
    "load_inspection",
    "nearest_pairs",
    "real_photos",
    "sample_caption",
    "score_table",
    "select_samples",
    "summary_markdown",
]
