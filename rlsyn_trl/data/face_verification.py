"""Face verification pair benchmarks, read from the user's copies: the insightface ``.bin`` sets and RFW.

Both become datasets of pairs (``image_a``, ``image_b``, ``issame``, ``fold``) in file order, where ``fold`` is
the 10-fold cut the benchmarks are scored with (:func:`rlsyn_trl.metrics.functional.fold_ids`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import datasets
import numpy as np

from ..metrics.functional import fold_ids
from ._folders import check_image, image_value, read_image, require_data_dir, require_folder
from ._options import CheckedBuilder

NUM_FOLDS = 10
VERIFICATION_SETS = ("lfw", "agedb_30", "cfp_fp", "calfw", "cplfw")
RFW_RACES = ("African", "Asian", "Caucasian", "Indian")

MISSING_BINS_MESSAGE = (
    "The verification pair files cannot be downloaded automatically. They ship with insightface's training-set "
    "archives (e.g. faces_webface_112x112.zip or faces_emore.zip, listed at "
    "https://github.com/deepinsight/insightface/tree/master/recognition/_datasets_); pass `data_dir` pointing to "
    "the folder holding lfw.bin, agedb_30.bin, cfp_fp.bin, calfw.bin and cplfw.bin."
)
MISSING_RFW_MESSAGE = (
    "RFW cannot be downloaded automatically: request access from its authors (http://whdeng.cn/RFW/testing.html, "
    "Wang et al. 2019), extract test.tar.gz and pass `data_dir` pointing to the folder that holds test/ "
    "(test/data/<Race>/<identity>/<image>.jpg and test/txts/<Race>/<Race>_pairs.txt)."
)

PAIR_FEATURES = {
    "image_a": datasets.Image(),
    "image_b": datasets.Image(),
    "issame": datasets.Value("bool"),
    "fold": datasets.Value("int32"),
}


class _PairBinUnpickler(pickle.Unpickler):
    """Unpickling can run arbitrary code; a pair file is data, so only what such files contain is allowed.

    That is bytes (Python 2 ``str``, or ``_codecs.encode`` when re-saved by Python 3 with protocol 2), lists, bools
    and, in some re-distributions, ``numpy`` arrays.
    """

    ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype")} | {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a verification pair file")
        return super().find_class(module, name)


def load_pair_bin(path: Path) -> tuple[list[bytes], list[bool]]:
    """Read an insightface ``<set>.bin`` without mxnet: the encoded images (2 per pair, in order) and ``issame``.

    The file is a pickle of ``(bins, issame_list)`` written by Python 2, hence ``encoding="bytes"``.
    """
    try:
        with path.open("rb") as file:
            bins, issame = _PairBinUnpickler(file, encoding="bytes").load()
        images = [image.tobytes() if isinstance(image, np.ndarray) else bytes(image) for image in bins]
        issame = [bool(flag) for flag in issame]
    except Exception as error:  # a truncated file or a different layout fails in many ways
        raise ValueError(
            f"{path} is not an insightface pair file (a pickle of (encoded images, issame list)): {error}. "
            "Re-download it."
        ) from error
    if len(images) != 2 * len(issame) or not issame:
        raise ValueError(f"{path} holds {len(images)} images for {len(issame)} pairs; expected 2 per pair.")
    return images, issame


class FaceVerification(CheckedBuilder):
    """One insightface pair set (LFW, AgeDB-30, CFP-FP, CALFW or CPLFW) as a ``test`` split of 112x112 pairs."""

    BUILDER_CONFIGS = [
        datasets.BuilderConfig(name=name, description=f"Pairs of {name}.bin, scored by 10-fold accuracy.")
        for name in VERIFICATION_SETS
    ]
    REGISTERED_NAME = "face_verification"  # no default config: the set must be named (checked by CheckedBuilder)
    CONFIG_SETTING = "`verification_sets` of the recognizer recipe"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Face verification pairs from an insightface .bin file, with their 10-fold index.",
            features=datasets.Features(PAIR_FEATURES),
            homepage="https://github.com/deepinsight/insightface/tree/master/recognition/_datasets_",
            citation="Deng et al., ArcFace: Additive Angular Margin Loss for Deep Face Recognition, CVPR 2019.",
        )

    def _split_generators(self, dl_manager):
        path = require_data_dir(self.config.data_dir, MISSING_BINS_MESSAGE) / f"{self.config.name}.bin"
        if not path.is_file():
            raise FileNotFoundError(f"Missing pair file {path}. {MISSING_BINS_MESSAGE}")
        return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"path": path})]

    def _generate_examples(self, path: Path):
        images, issame = load_pair_bin(path)
        for index, (same, fold) in enumerate(zip(issame, fold_ids(len(issame), NUM_FOLDS))):
            first, second = (check_image(images[i], f"{path} image {i}") for i in (2 * index, 2 * index + 1))
            example = {"image_a": image_value(first), "image_b": image_value(second), "issame": same, "fold": int(fold)}
            yield index, example


def rfw_pairs_file(test: Path, race: str) -> Path:
    """Where the RFW archive keeps a race's pair list."""
    return test / "txts" / race / f"{race}_pairs.txt"


def read_rfw_pairs(path: Path) -> list[tuple[str, int, str, int]]:
    """``(identity_a, image_a, identity_b, image_b)`` per line of an RFW ``<Race>_pairs.txt``.

    Lines are tab-separated, as in LFW's pairs.txt: ``identity n1 n2`` for a matched pair and
    ``identity1 n1 identity2 n2`` for a mismatched one; each block of 600 lines is one fold (300 + 300).
    """
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        try:
            if len(fields) == 3:
                pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
            elif len(fields) == 4:
                pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
            elif fields:
                raise ValueError(f"{len(fields)} fields")
        except ValueError as error:
            raise ValueError(
                f"Malformed line {number} of {path}: {line!r} ({error}). Expected 'identity n1 n2' or "
                "'identity1 n1 identity2 n2' separated by tabs; restore the file from the RFW archive."
            ) from error
    if not pairs:
        raise ValueError(f"{path} lists no pairs; restore the file from the RFW archive.")
    return pairs


class Rfw(CheckedBuilder):
    """RFW (Racial Faces in-the-Wild): about 6,000 pairs for each of four races, to measure demographic bias.

    ``all`` holds every race (``fold`` restarts per race, so group by ``race`` when scoring); the other configs
    hold one race each. Images are ``test/data/<Race>/<identity>/<identity>_<nnnn>.jpg``.
    """

    # Config names must differ from FaceVerification's: both builders live in this module, which names their cache.
    BUILDER_CONFIGS = [datasets.BuilderConfig(name="all", description="The four races.")] + [
        datasets.BuilderConfig(name=race.lower(), description=f"The {race} subset.") for race in RFW_RACES
    ]
    DEFAULT_CONFIG_NAME = "all"
    REGISTERED_NAME = "rfw"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="RFW face verification pairs per race, with their 10-fold index.",
            features=datasets.Features(
                {
                    **PAIR_FEATURES,
                    "race": datasets.ClassLabel(names=list(RFW_RACES)),
                    "source_a": datasets.Value("string"),
                    "source_b": datasets.Value("string"),
                }
            ),
            homepage="http://whdeng.cn/RFW/testing.html",
            citation="Wang et al., Racial Faces in-the-Wild: Reducing Racial Bias by Information Maximization "
            "Adaptation Network, ICCV 2019.",
        )

    @property
    def _races(self) -> tuple[str, ...]:
        return RFW_RACES if self.config.name == "all" else tuple(r for r in RFW_RACES if r.lower() == self.config.name)

    def _split_generators(self, dl_manager):
        root = require_data_dir(self.config.data_dir, MISSING_RFW_MESSAGE)
        test = require_folder(root / "test", "RFW test folder", MISSING_RFW_MESSAGE)
        for race in self._races:
            require_folder(test / "data" / race, f"RFW {race} image folder", MISSING_RFW_MESSAGE)
            if not rfw_pairs_file(test, race).is_file():
                raise FileNotFoundError(f"Missing pair list {rfw_pairs_file(test, race)}. {MISSING_RFW_MESSAGE}")
        return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"test": test})]

    def _generate_examples(self, test: Path):
        for race in self._races:
            pairs = read_rfw_pairs(rfw_pairs_file(test, race))
            for index, ((identity_a, number_a, identity_b, number_b), fold) in enumerate(
                zip(pairs, fold_ids(len(pairs), NUM_FOLDS))
            ):
                source_a = f"test/data/{race}/{identity_a}/{identity_a}_{number_a:04d}.jpg"
                source_b = f"test/data/{race}/{identity_b}/{identity_b}_{number_b:04d}.jpg"
                example = {
                    "image_a": image_value(read_image(test.parent / source_a)),
                    "image_b": image_value(read_image(test.parent / source_b)),
                    "issame": identity_a == identity_b,
                    "fold": int(fold),
                    "race": race,
                    "source_a": source_a,
                    "source_b": source_b,
                }
                yield f"{race}/{index}", example
