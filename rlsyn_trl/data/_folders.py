"""What the local-copy benchmark builders share: locating the user's copy, listing and checking image files, and
the Market-1501 folder layout that the person-ReID releases use.

None of these benchmarks can be downloaded automatically (registration or licence terms), so every builder reads a
copy the user passes as ``data_dir`` and fails early, naming the missing or malformed file and how to fix it.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image

from ._options import CheckedBuilder

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})  # compared lower-cased: .JPG and .Png are images too


def require_folder(path: Path, what: str, instructions: str) -> Path:
    """Return ``path`` if it is a folder, else raise naming it, what it should hold and where to get it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a folder. {instructions}")
    return path


def require_data_dir(data_dir: str | Path | None, instructions: str) -> Path:
    """The root of the user's local copy, which must be passed explicitly as ``data_dir``."""
    if data_dir is None:
        raise FileNotFoundError(f"No `data_dir` given: this dataset is read from a local copy. {instructions}")
    return require_folder(Path(data_dir).expanduser(), "Dataset folder", instructions)


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` (any case of the suffix: ``.jpg``, ``.JPG``, ``.jpeg``, ``.png``...), sorted by name
    so builds are reproducible.

    Anything else is ignored: ``Thumbs.db``, ``desktop.ini``, sub-folders, and hidden files such as ``.DS_Store`` or
    the ``._*.jpg`` resource forks that macOS archivers add next to every image.
    """
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )


def check_image(data: bytes, name: str) -> bytes:
    """Decode ``data`` fully so that a corrupted image fails here, named, rather than deep inside a training loop."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # PIL raises many types for corrupted files
        raise ValueError(f"Unreadable or corrupted image {name}: {error}. Replace the file and retry.") from error
    return data


def read_image(path: Path) -> bytes:
    """The file's bytes as released (no re-encoding, so no JPEG generation loss), once checked to decode."""
    if not path.is_file():
        raise FileNotFoundError(f"Missing image {path}: the copy is incomplete. Restore the file and retry.")
    return check_image(path.read_bytes(), str(path))


def image_value(data: bytes) -> dict[str, bytes | None]:
    """The ``datasets.Image`` value for encoded bytes; no path, so the built dataset does not depend on the copy."""
    return {"bytes": data, "path": None}


# Split name -> folder name, shared by Market-1501 and the CUHK03-NP release that copied its layout.
REID_SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass(frozen=True)
class ReidImage:
    """One ReID image, with the person and camera that its file name encodes."""

    path: Path
    source: str
    person_id: int
    camera_id: int


class ReidFolderBuilder(CheckedBuilder):
    """Base of the ReID builders: ``train`` / ``query`` / ``gallery`` splits read from the Market-1501 layout.

    Subclasses give the file-name pattern (named groups ``person`` and ``camera``, matched against the whole name
    without its suffix, which may be any image suffix in any case: ``.jpg``, ``.JPG``, ``.png``...),
    the protocol's junk and distractor ids, and the dataset's metadata. ``label`` indexes the sorted training
    identities; query and gallery identities are disjoint from them, so their ``label`` is -1 and retrieval uses
    ``person_id`` / ``camera_id``. Camera ids are kept as written in the file names (1-based).
    """

    FILE_PATTERN: re.Pattern[str]
    NAME_EXAMPLE: str
    MISSING_DATA_MESSAGE: str
    JUNK_ID: int | None = None  # excluded from every split
    DISTRACTOR_ID: int | None = None  # kept in the gallery only, as hard negatives
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""

    def _split_root(self, root: Path) -> Path:
        """Folder holding the three split folders; the user's ``data_dir`` unless a config selects a sub-folder."""
        return root

    @functools.cached_property
    def _images(self) -> dict[str, list[ReidImage]]:
        """Every split's kept images; scanned once because ``_info`` already needs the training identities."""
        root = require_data_dir(self.config.data_dir, self.MISSING_DATA_MESSAGE)
        split_root = self._split_root(root)
        images = {}
        for split, name in REID_SPLIT_FOLDERS.items():
            folder = require_folder(split_root / name, f"Split folder {name!r}", self.MISSING_DATA_MESSAGE)
            images[split] = self._scan(folder, root, split)
        return images

    def _scan(self, folder: Path, root: Path, split: str) -> list[ReidImage]:
        """Read person and camera from every image name, dropping what the protocol excludes from ``split``."""
        images = []
        for path in list_images(folder):
            match = self.FILE_PATTERN.fullmatch(path.stem)
            if match is None:
                raise ValueError(
                    f"Malformed file name {path}: expected names like {self.NAME_EXAMPLE} (person id, then camera). "
                    "Rename or remove the file; the person and camera ids are read from the name."
                )
            person_id = int(match["person"])
            if person_id == self.JUNK_ID or (person_id == self.DISTRACTOR_ID and split != "gallery"):
                continue
            images.append(ReidImage(path, path.relative_to(root).as_posix(), person_id, int(match["camera"])))
        if not images:
            raise FileNotFoundError(f"No usable images in {folder}. {self.MISSING_DATA_MESSAGE}")
        return images

    @functools.cached_property
    def _train_ids(self) -> list[int]:
        return sorted({image.person_id for image in self._images["train"]})

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.DESCRIPTION,
            features=datasets.Features(
                {
                    "image": datasets.Image(),
                    "label": datasets.ClassLabel(names=[f"{person:04d}" for person in self._train_ids]),
                    "person_id": datasets.Value("int32"),
                    "camera_id": datasets.Value("int32"),
                    "source": datasets.Value("string"),
                }
            ),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in REID_SPLIT_FOLDERS]

    def _generate_examples(self, split: str):
        labels = {person: index for index, person in enumerate(self._train_ids)} if split == "train" else {}
        for image in self._images[split]:
            yield (
                image.source,
                {
                    "image": image_value(read_image(image.path)),
                    "label": labels.get(image.person_id, -1),
                    "person_id": image.person_id,
                    "camera_id": image.camera_id,
                    "source": image.source,
                },
            )


def folder_fingerprint(data_dir: str | Path) -> str:
    """A hash of what a folder holds: every file's path under it, size and modification time (nothing is read).

    The datasets cache keys a build by its builder, config and options, and ``data_dir`` enters only as the text
    given; the fingerprint keys it by the folder itself, so the same relative path in another folder, or the same
    folder after photos were added, removed or replaced, builds afresh instead of reusing another set of people.
    """
    import hashlib
    import os

    root = Path(data_dir).expanduser().resolve()
    digest = hashlib.sha256(str(root).encode())
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder) / name
            try:
                stat = path.stat()
            except OSError:  # a broken link or a file removed meanwhile: its name alone
                digest.update(f"{path.relative_to(root)}\0missing\n".encode())
                continue
            digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
