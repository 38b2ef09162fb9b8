"""CASIA-WebFace face recognition training set, read from an image-folder copy or insightface's ``train.rec`` /
``train.idx`` (:mod:`.recordio`, no mxnet needed), whole or as a reproducible subset.

The paper trains its face recogniser on a small subset; ``num_identities`` x ``images_per_identity`` images drawn
with ``seed`` make that subset a pure function of (folder contents, options), in either form.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ._folders import check_image, image_value, list_images, read_image, require_data_dir
from ._options import CheckedBuilder, identity_features
from .option_checks import require_count
from .recordio import RecordFile

logger = logging.getLogger(__name__)

MISSING_DATA_MESSAGE = (
    "CASIA-WebFace cannot be downloaded automatically. Request it from its authors (CBSR, Institute of Automation, "
    "Chinese Academy of Sciences; Yi et al. 2014) or use an aligned re-distribution (e.g. insightface's "
    "faces_webface_112x112), and pass `data_dir` pointing to the folder that holds one sub-folder per identity, "
    "e.g. 0000045/001.jpg, or insightface's train.rec and train.idx."
)


def select_subset(
    identities: dict[str, list[str]], num_identities: int | None, images_per_identity: int | None, seed: int
) -> dict[str, list[str]]:
    """Pick ``num_identities`` identities and ``images_per_identity`` images of each (``None``: all).

    Identities are never padded, so every identity of the subset has exactly ``images_per_identity`` images. When
    ``num_identities`` draws a subset, identities with fewer images are not eligible and are skipped with a warning
    that names them; when every identity is asked for (``num_identities`` None), one with too few images is refused
    (a folder of your own people must not lose one silently). One ``numpy`` generator seeded by ``seed`` draws the
    identities among the eligible ones (sorted by name), then each chosen identity's images in name order; results
    are sorted by name.
    """
    for option, value in (("num_identities", num_identities), ("images_per_identity", images_per_identity)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be a positive integer or None, got {value}")
    minimum = images_per_identity or 1
    eligible = sorted(name for name, files in identities.items() if len(files) >= minimum)
    short = {name: len(files) for name, files in sorted(identities.items()) if 0 < len(files) < minimum}
    if short:
        listed = ", ".join(f"{name} ({count})" for name, count in list(short.items())[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        if num_identities is None:
            raise ValueError(
                f"{len(short)} identity folder(s) hold fewer than the {minimum} images per identity asked for "
                f"(shots / images_per_identity): {listed}{more}. Every identity is used (no identity subset), so none "
                f"is dropped silently: add photos, lower shots to {min(short.values())}, or move those folders out "
                "of data_dir."
            )
        logger.warning(
            "%d identities hold fewer than %d images and are not eligible for the %d drawn: %s%s",
            len(short), minimum, num_identities, listed, more,
        )  # fmt: skip
    needed = num_identities or 1
    if len(eligible) < needed:
        raise ValueError(
            f"Only {len(eligible)} of the {len(identities)} identity folders have at least {minimum} images, but "
            f"{needed} such identities are needed. Lower num_identities or images_per_identity."
        )
    rng = np.random.default_rng(seed)
    if num_identities is not None:
        eligible = sorted(rng.choice(eligible, size=num_identities, replace=False).tolist())
    subset = {}
    for name in eligible:
        files = sorted(identities[name])
        if images_per_identity is not None:
            files = [files[i] for i in sorted(rng.permutation(len(files))[:images_per_identity])]
        subset[name] = files
    return subset


@dataclass
class CasiaWebFaceConfig(datasets.BuilderConfig):
    """Subset options (see :func:`select_subset`): identities with fewer than ``images_per_identity`` images are
    skipped, with a warning, from a drawn subset and refused otherwise; the defaults (``None``) keep every identity
    and every image."""

    num_identities: int | None = None
    images_per_identity: int | None = None
    seed: int = 0


class CasiaWebFace(CheckedBuilder):
    """CASIA-WebFace (10,575 identities, about 494k images) as a single ``train`` split labelled by identity."""

    BUILDER_CONFIG_CLASS = CasiaWebFaceConfig
    BUILDER_CONFIGS = [
        CasiaWebFaceConfig(name="default", description="One folder per identity, optionally subset."),
        # The paper trains on "a small subset" without giving its size; 1,000 identities is the project's choice (the
        # size of the ImageNet label table DiT-XL/2 was trained with). The stages' `shots` sets images per identity.
        CasiaWebFaceConfig(name="subset_1k", num_identities=1000, description="1,000 identities drawn with `seed`."),
    ]
    DEFAULT_CONFIG_NAME = "default"
    REGISTERED_NAME = "casia_webface"

    @classmethod
    def check_config(cls, config: CasiaWebFaceConfig) -> None:
        """Checked before the identity folders are listed (about 494k files for the whole set)."""
        dataset = f"{cls.REGISTERED_NAME}/{config.name}"
        require_count(dataset, "num_identities", config.num_identities, "identities drawn", optional=True)
        per_identity = "images drawn per identity, the stages' `shots`"
        require_count(dataset, "images_per_identity", config.images_per_identity, per_identity, optional=True)
        require_count(dataset, "seed", config.seed, "the subset seed, `split_seed` in the stages", minimum=0)

    @functools.cached_property
    def _root(self) -> Path:
        return require_data_dir(self.config.data_dir, MISSING_DATA_MESSAGE)

    @functools.cached_property
    def _records(self) -> RecordFile | None:
        """insightface's ``train.rec`` with its ``train.idx``, when the folder holds either; else None (folders)."""
        if not any((self._root / name).is_file() for name in ("train.rec", "train.idx")):
            return None
        return RecordFile(self._root / "train.rec")

    @functools.cached_property
    def _subset(self) -> dict[str, list[str]]:
        """Chosen identity -> chosen image file names (RecordIO: record keys); computed once, ``_info`` already
        needs the names."""
        if self._records is not None:
            identities = self._record_identities(self._records)
        else:
            folders = [path for path in self._root.iterdir() if path.is_dir() and not path.name.startswith(".")]
            identities = {folder.name: [path.name for path in list_images(folder)] for folder in folders}
        if not any(identities.values()):
            raise FileNotFoundError(f"No identity folder with images in {self._root}. {MISSING_DATA_MESSAGE}")
        return select_subset(identities, self.config.num_identities, self.config.images_per_identity, self.config.seed)

    @staticmethod
    def _record_identities(records: RecordFile) -> dict[str, list[str]]:
        """Identity (the records' class label, zero-padded so that names sort as numbers) -> record keys (padded
        alike), from the records' headers alone: no image is read."""
        keys = records.image_keys()
        labels = {key: int(records.header(key).labels[0]) for key in keys}
        label_width, key_width = len(str(max(labels.values()))), len(str(max(keys)))
        identities: dict[str, list[str]] = {}
        for key, label in labels.items():
            identities.setdefault(f"{label:0{label_width}d}", []).append(f"{key:0{key_width}d}")
        return identities

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="CASIA-WebFace face images labelled by identity, optionally a seeded subset.",
            features=identity_features(list(self._subset)),
            homepage="http://www.cbsr.ia.ac.cn/english/CASIA-WebFace-Database.html",
            citation="Yi et al., Learning Face Representation from Scratch, arXiv:1411.7923, 2014.",
        )

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN)]

    def _generate_examples(self):
        for label, (identity, files) in enumerate(self._subset.items()):
            for file in files:
                if self._records is None:
                    source, data = f"{identity}/{file}", read_image(self._root / identity / file)
                else:
                    source = f"train.rec#{int(file)}"
                    data = check_image(self._records.image(int(file))[1], f"{self._records.path} record {int(file)}")
                yield source, {"image": image_value(data), "label": label, "identity": identity, "source": source}
