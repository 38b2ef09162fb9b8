"""CUHK03-NP (the "new protocol" of Zhong et al. 2017), read from the user's copy of the release.

The release copies the Market-1501 layout: ``cuhk03-np/{detected,labeled}/{bounding_box_train,bounding_box_test,
query}`` with file names ``PPPP_cC_N.png`` (person, camera 1 or 2, image number), e.g. ``0001_c1_1.png``. This
format is taken from data-preparation code that reads the release (e.g. MEB-Net's ``mebnet/datasets/cuhk03.py``,
``*.png`` with ``([-\\d]+)_c(\\d)``) and README listings of its files; other image suffixes in any case (``.jpg``,
``.PNG``...) are accepted as well because some re-distributed copies were re-encoded or renamed. There are no junk or
distractor images in this protocol.
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets

from ._folders import ReidFolderBuilder, require_folder

MISSING_DATA_MESSAGE = (
    "CUHK03-NP cannot be downloaded automatically. Follow the instructions of "
    "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP (the new-protocol release of CUHK03, "
    "Li et al. 2014), unzip it and pass `data_dir` pointing to the cuhk03-np folder that holds detected/ and labeled/."
)


class Cuhk03Np(ReidFolderBuilder):
    """CUHK03-NP: 767 training and 700 test identities, with DPM-``detected`` or hand-``labeled`` bounding boxes."""

    BUILDER_CONFIGS = [
        datasets.BuilderConfig(name="detected", description="Bounding boxes found by the DPM pedestrian detector."),
        datasets.BuilderConfig(name="labeled", description="Bounding boxes drawn by hand."),
    ]
    FILE_PATTERN = re.compile(r"(?P<person>\d{4})_c(?P<camera>\d)_\d+")  # + an image suffix, any case
    NAME_EXAMPLE = "0001_c1_1.png"
    MISSING_DATA_MESSAGE = MISSING_DATA_MESSAGE
    REGISTERED_NAME = "cuhk03_np"
    DESCRIPTION = "CUHK03-NP person re-identification (new protocol): train, query and gallery splits."
    HOMEPAGE = "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP"
    CITATION = (
        "Li et al., DeepReID: Deep Filter Pairing Neural Network for Person Re-identification, CVPR 2014; "
        "Zhong et al., Re-ranking Person Re-identification with k-reciprocal Encoding, CVPR 2017."
    )

    def _split_root(self, root: Path) -> Path:
        return require_folder(root / self.config.name, f"CUHK03-NP {self.config.name!r} folder", MISSING_DATA_MESSAGE)
