"""Market-1501 person re-identification, read from the user's copy of the official release.

File names are ``PPPP_cCsS_FFFFFF_NN.jpg`` (person, camera, sequence, frame, box). The standard protocol drops the
junk boxes (person ``-1``) everywhere and keeps the distractor boxes (person ``0000``) in the gallery only.
"""

from __future__ import annotations

import re

import datasets

from ._folders import ReidFolderBuilder

MISSING_DATA_MESSAGE = (
    "Market-1501 cannot be downloaded automatically. Get Market-1501-v15.09.15.zip from the authors' page "
    "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html, unzip it and pass `data_dir` pointing to the folder "
    "that holds bounding_box_train/, bounding_box_test/ and query/."
)


class Market1501(ReidFolderBuilder):
    """Market-1501 (Zheng et al. 2015): 751 training identities; 3,368 queries against a 15,913-image gallery."""

    BUILDER_CONFIGS = [datasets.BuilderConfig(name="default", description="The standard Market-1501 protocol.")]
    FILE_PATTERN = re.compile(r"(?P<person>-1|\d{4})_c(?P<camera>\d)s\d_\d{6}_\d{2}")  # + an image suffix, any case
    NAME_EXAMPLE = "0002_c1s1_000451_03.jpg"
    MISSING_DATA_MESSAGE = MISSING_DATA_MESSAGE
    REGISTERED_NAME = "market1501"
    JUNK_ID = -1
    DISTRACTOR_ID = 0
    DESCRIPTION = "Market-1501 person re-identification: train, query and gallery splits of the standard protocol."
    HOMEPAGE = "https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html"
    CITATION = "Zheng et al., Scalable Person Re-identification: A Benchmark, ICCV 2015."
