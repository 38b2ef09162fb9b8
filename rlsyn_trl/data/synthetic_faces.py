"""Thousands of public synthetic faces, rendered offline: data for everything that must never see a private identity.

The 20 public ORL people are too few for a face prior or an identity encoder. MobileStyleGAN (the ``random-face``
wheel's OpenVINO IR, a 512-d latent to a 1024 px photoreal face) renders people who do not exist, so these faces are
nobody in any private target and may train the priors, phi and the evaluator. Each face is its own (pseudo-)identity,
optionally with ``views`` augmented views (small rotation, scale and shift); faces are framed, converted and sized
like ORL (grayscale, 92x112) so the stages treat them as another public split.

Rendering is the cost (about half a second a face on one CPU thread), so it is resumable and shared: each face is
written, atomically, to a render cache keyed by what decides its pixels (weights, seed, truncation, framing), one PNG
per face in shard folders of 1,000; a killed build resumes at the first missing face, and a build of N faces reuses
those of any earlier build with the same seed (face i is always the i-th latent of ``Generator(seed)``). The
``datasets`` cache then holds the built split like any other benchmark's.

Licence: the ``random-face`` code is Apache-2.0, but its weights are distilled from StyleGAN2 trained on FFHQ, whose
terms are non-commercial; a model trained on these faces inherits them (the cards and the README say so).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from ..utils.io import atomic_write
from ._options import CheckedBuilder, identity_features
from .option_checks import require_count

logger = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install 'rlsyn-trl[faces]'"
DISTRIBUTION = "random-face"
WEIGHT_FILES = ("MappingNetwork", "SynthesisNetwork")
STYLE_DIM = 512
ORL_SIZE = (92, 112)  # (width, height) of an ORL image
# The face's box in the 1024 px render, as fractions of its side: x from 0.15 to 0.85, y from 0.08, height at ORL's
# 92:112 aspect. Compared by eye with ORL's images: hair at the top edge, chin and some neck at the bottom, the face
# about two thirds of the width (the tighter 0.2-0.8 box cut the forehead and filled the width with cheeks).
CROP = (0.15, 0.85, 0.08)
# The stored image is the face's box with this many ORL pixels more on each side (x, y), so a view can rotate, zoom
# out and shift without showing a border; the plain view is the stored image's centre, cut exactly.
CONTEXT = (12, 14)
MEAN_SEED = 20210721  # the truncation centre: the mean style of MEAN_SAMPLES latents of its own generator
MEAN_SAMPLES = 1024
SHARD_SIZE = 1000
RENDER_FORMAT = 1
VIEW_ROTATION = 8.0  # degrees
VIEW_SCALE = 0.08  # zoom in or out by up to this fraction
VIEW_SHIFT = 0.05  # of the face's width / height


def require_faces_extra() -> Path:
    """The folder holding the MobileStyleGAN IR files, or an ``ImportError`` naming the install command.

    The ``random-face`` package itself is not imported (its wrapper needs an OpenVINO API that no longer exists and
    packages this project does not use); only its data files are read, by OpenVINO's current API.
    """
    try:
        import openvino  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"The synthetic public faces are rendered with OpenVINO, which is not installed: {INSTALL_COMMAND}"
        ) from error
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise ImportError(
            f"The synthetic public faces need the MobileStyleGAN weights of the `random-face` wheel, which is not "
            f"installed: {INSTALL_COMMAND}"
        ) from error
    folder = Path(distribution.locate_file("random_face/data"))
    files = [f"{name}.{ext}" for name in WEIGHT_FILES for ext in ("xml", "bin")]
    missing = [file for file in files if not (folder / file).is_file()]
    if missing:
        raise ImportError(
            f"The installed random-face has no {', '.join(missing)} under {folder}; reinstall it: {INSTALL_COMMAND}"
        )
    return folder


def face_latents(seed: int, num_faces: int) -> np.ndarray:
    """The latents of faces ``0..num_faces-1``: face i's is the same for every ``num_faces`` (a prefix)."""
    return np.random.default_rng(seed).standard_normal((num_faces, STYLE_DIM)).astype(np.float32)


class FaceRenderer:
    """MobileStyleGAN through OpenVINO: latent -> truncated style -> 1024 px face -> ORL-framed grayscale image."""

    def __init__(self, truncation: float, threads: int = 1) -> None:
        import openvino

        folder = require_faces_extra()
        core = openvino.Core()
        properties = {"INFERENCE_NUM_THREADS": int(threads)}
        self.mapping, self.synthesis = (
            core.compile_model(core.read_model(folder / f"{name}.xml"), "CPU", properties) for name in WEIGHT_FILES
        )
        self.truncation = truncation
        rng = np.random.default_rng(MEAN_SEED)
        self.style_mean = np.mean(
            [self._style(rng.standard_normal((1, STYLE_DIM)).astype(np.float32)) for _ in range(MEAN_SAMPLES)], axis=0
        )

    def _style(self, latent: np.ndarray) -> np.ndarray:
        return self.mapping(latent)[0]

    def render(self, latent: np.ndarray) -> Image.Image:
        """The stored image of one face: its ORL box plus :data:`CONTEXT`, grayscale, at ORL's pixel scale."""
        style = self.style_mean + self.truncation * (self._style(latent[None]) - self.style_mean)
        pixels = self.synthesis(style.astype(np.float32))[0][0]  # [3, 1024, 1024] in [-1, 1]
        rgb = (np.clip((pixels.transpose(1, 2, 0) + 1) / 2, 0, 1) * 255).round().astype(np.uint8)
        return frame_face(Image.fromarray(rgb).convert("L"))


def frame_face(image: Image.Image) -> Image.Image:
    """ORL's framing of a square render (:data:`CROP`), with :data:`CONTEXT` around it, resampled to ORL's scale."""
    side = image.width
    left, right, top = (fraction * side for fraction in CROP)
    scale = (right - left) / ORL_SIZE[0]  # render pixels per ORL pixel
    box = (
        left - CONTEXT[0] * scale,
        top - CONTEXT[1] * scale,
        right + CONTEXT[0] * scale,
        top + (ORL_SIZE[1] + CONTEXT[1]) * scale,
    )
    pad = int(np.ceil(max(0.0, -box[0], -box[1], box[2] - side, box[3] - side))) + 1
    padded = Image.fromarray(np.pad(np.asarray(image), pad, mode="edge")) if pad > 1 else image
    offset = pad if pad > 1 else 0
    size = (ORL_SIZE[0] + 2 * CONTEXT[0], ORL_SIZE[1] + 2 * CONTEXT[1])
    return padded.resize(size, Image.LANCZOS, box=tuple(value + offset for value in box))


def face_view(stored: Image.Image, rng: np.random.Generator | None) -> Image.Image:
    """The 92x112 face from a stored image: its exact centre (``rng`` None), or a view turned by up to
    :data:`VIEW_ROTATION` degrees, zoomed by up to :data:`VIEW_SCALE` and shifted by up to :data:`VIEW_SHIFT`."""
    width, height = ORL_SIZE
    if rng is None:
        return stored.crop((CONTEXT[0], CONTEXT[1], CONTEXT[0] + width, CONTEXT[1] + height))
    angle, zoom, dx, dy = rng.uniform(-1, 1, size=4) * (VIEW_ROTATION, VIEW_SCALE, VIEW_SHIFT, VIEW_SHIFT)
    centre = (stored.width / 2, stored.height / 2)
    turned = stored.rotate(float(angle), resample=Image.BICUBIC, center=centre)
    half = (width * (1 + zoom) / 2, height * (1 + zoom) / 2)
    x, y = centre[0] + dx * width, centre[1] + dy * height
    box = (x - half[0], y - half[1], x + half[0], y + half[1])
    return turned.resize(ORL_SIZE, Image.LANCZOS, box=box)


@functools.lru_cache(maxsize=4)
def weights_fingerprint(folder: Path) -> str:
    """A hash of the IR files: another release of the weights renders other faces, so it keys the render cache."""
    digest = hashlib.sha256()
    for name in WEIGHT_FILES:
        for ext in ("xml", "bin"):
            with (folder / f"{name}.{ext}").open("rb") as handle:
                for block in iter(lambda: handle.read(2**20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def render_key(seed: int, truncation: float) -> dict:
    """Everything that decides a stored face's pixels."""
    return {
        "format": RENDER_FORMAT,
        "weights": weights_fingerprint(require_faces_extra()),
        "seed": seed,
        "truncation": truncation,
        "crop": CROP,
        "context": CONTEXT,
        "mean": [MEAN_SEED, MEAN_SAMPLES],
    }


def face_path(folder: Path, index: int) -> Path:
    return folder / f"{index // SHARD_SIZE:05d}" / f"{index:06d}.png"


def render_faces(folder: Path, num_faces: int, seed: int, truncation: float, threads: int = 1) -> Path:
    """Render faces ``0..num_faces-1`` of ``seed`` into ``folder`` (one PNG each, written atomically), skipping
    those already there: a killed run resumes where it stopped. Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "render.json"
    key = render_key(seed, truncation)
    if not key_file.is_file():
        atomic_write(key_file, lambda tmp: tmp.write_text(json.dumps(key, indent=2)))
    missing = [index for index in range(num_faces) if not face_path(folder, index).is_file()]
    if not missing:
        return folder
    logger.info("Rendering %d of %d synthetic faces (seed %d) into %s", len(missing), num_faces, seed, folder)
    renderer = FaceRenderer(truncation, threads)
    latents = face_latents(seed, num_faces)
    began = time.perf_counter()
    for done, index in enumerate(missing, start=1):
        image = renderer.render(latents[index])
        atomic_write(face_path(folder, index), lambda tmp, image=image: image.save(tmp, format="PNG"))
        if done % 100 == 0 or done == len(missing):
            seconds = (time.perf_counter() - began) / done
            logger.info("Rendered %d/%d faces, %.2f s a face", done, len(missing), seconds)
    return folder


def render_folder(cache_root: str | Path, seed: int, truncation: float) -> Path:
    """The render cache folder of (weights, seed, truncation, framing) under a ``datasets`` cache root."""
    key = json.dumps(render_key(seed, truncation), sort_keys=True)
    return Path(cache_root) / "rlsyn_trl_synthetic_faces" / hashlib.sha256(key.encode()).hexdigest()[:16]


def identity_name(index: int) -> str:
    return f"face{index:06d}"


@dataclass
class SyntheticFacesConfig(datasets.BuilderConfig):
    """``num_faces`` rendered people (latents of ``numpy.random.default_rng(seed)``), ``views`` images each (the
    first the plain face), with the style pulled towards the mean by ``truncation`` (1: none; lower: more typical,
    less varied faces)."""

    num_faces: int = 2000
    seed: int = 0
    views: int = 1
    truncation: float = 0.7


class SyntheticFaces(CheckedBuilder):
    """MobileStyleGAN faces framed like ORL (grayscale 92x112), one pseudo-identity per face: a public split."""

    BUILDER_CONFIG_CLASS = SyntheticFacesConfig
    BUILDER_CONFIGS = [
        SyntheticFacesConfig(name="public", description="Synthetic people: nobody in any private target."),
    ]
    DEFAULT_CONFIG_NAME = "public"
    REGISTERED_NAME = "synthetic_faces"

    @classmethod
    def check_config(cls, config: SyntheticFacesConfig) -> None:
        dataset = f"{cls.REGISTERED_NAME}/{config.name}"
        require_count(dataset, "num_faces", config.num_faces, "rendered people")
        require_count(dataset, "seed", config.seed, "the seed of the faces' latents", minimum=0)
        require_count(dataset, "views", config.views, "images per face, the first the plain face")
        truncation = config.truncation
        if isinstance(truncation, bool) or not isinstance(truncation, (int, float)) or not 0 < truncation <= 1:
            raise ValueError(
                f"{dataset}: truncation={truncation!r} is not allowed; truncation (how far each style moves from "
                "the mean style towards its own) must be a number in (0, 1]."
            )

    def _info(self) -> datasets.DatasetInfo:
        names = [identity_name(index) for index in range(self.config.num_faces)]
        return datasets.DatasetInfo(
            description="Synthetic faces of people who do not exist (MobileStyleGAN), framed like ORL.",
            features=identity_features(names),
            homepage="https://github.com/bes-dev/random_face",
            citation="Belousov, MobileStyleGAN: A Lightweight Convolutional Neural Network for High-Fidelity Image "
            "Synthesis, arXiv:2104.04767, 2021.",
            license="code Apache-2.0; weights distilled from StyleGAN2 trained on FFHQ: non-commercial terms",
        )

    def _split_generators(self, dl_manager):
        import torch

        config = self.config
        folder = render_folder(self._cache_dir_root, config.seed, config.truncation)
        render_faces(folder, config.num_faces, config.seed, config.truncation, threads=torch.get_num_threads())
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"folder": folder})]

    def _generate_examples(self, folder: Path):
        config = self.config
        for index in range(config.num_faces):
            with Image.open(face_path(folder, index)) as stored:
                stored.load()
            for view in range(config.views):
                rng = None if view == 0 else np.random.default_rng([config.seed, index, view])
                buffer = io.BytesIO()
                face_view(stored, rng).save(buffer, format="PNG")
                source = f"seed{config.seed}/{identity_name(index)}/view{view}"
                yield (
                    source,
                    {
                        "image": {"bytes": buffer.getvalue(), "path": None},
                        "label": index,
                        "identity": identity_name(index),
                        "source": source,
                    },
                )
