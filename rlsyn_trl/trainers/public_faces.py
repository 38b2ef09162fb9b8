"""Synthetic public faces beside a public split, for the stages that must never see a private identity.

A few public identities (ORL's 20) teach a prior and phi little about faces. The ``synthetic_faces`` builder renders
thousands of people who do not exist; :class:`PublicFacesSettings` adds them to the priors' and the encoder
pre-training's data: each face is one more identity for phi's CosFace head (instance discrimination, the views and the
training augmentation make its positives) and null-class (unconditional) images for the DiT prior, whose label table
stays the public split's. Their provenance record sits in the ``data`` section's ``public_data`` list, with every
image's fingerprint, like the split itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import datasets
import torch

from ..data import load_identity_dataset
from ..data.synthetic_faces import INSTALL_COMMAND, SyntheticFaces, require_faces_extra
from ..provenance import image_fingerprints
from ..settings import SettingsError, SettingsGroup, require

FACES_DATASET = "synthetic_faces"
FACES_CONFIG = "public"
FACES_LICENCE = (
    "MobileStyleGAN weights of the random-face wheel (code Apache-2.0), distilled from StyleGAN2 trained on FFHQ: "
    "non-commercial terms, which a model trained on these faces inherits"
)


@dataclass
class PublicFacesSettings(SettingsGroup):
    """Synthetic public faces (``synthetic_faces``) added to a public split; 0 faces: none."""

    public_faces: int = field(
        default=0,
        metadata={
            "help": "Synthetic faces of people who do not exist added to the public data, each its own identity "
            f"(the generator's null class); 0: none. Needs {INSTALL_COMMAND}."
        },
    )
    public_faces_seed: int = field(default=0, metadata={"help": "Seed of the faces' latents."})
    public_faces_views: int = field(default=1, metadata={"help": "Images per face, the first the plain face."})
    public_faces_truncation: float = field(
        default=0.7, metadata={"help": "Style truncation (1: none; lower: more typical, less varied faces)."}
    )

    def check(self) -> None:
        require(
            type(self.public_faces) is int and self.public_faces >= 0,
            "public_faces",
            self.public_faces,
            "must be an integer >= 0 (0: no synthetic faces).",
        )
        if not self.public_faces:
            return
        try:
            SyntheticFaces.check_options(FACES_CONFIG, **self.public_faces_options())
            require_faces_extra()
        except (ValueError, ImportError) as error:
            raise SettingsError(f"--public_faces {self.public_faces}: {error}") from error

    def public_faces_options(self) -> dict:
        """The ``synthetic_faces`` builder's options."""
        return {
            "num_faces": self.public_faces,
            "seed": self.public_faces_seed,
            "views": self.public_faces_views,
            "truncation": self.public_faces_truncation,
        }


def load_public_faces(settings: PublicFacesSettings, cache_dir: str | None = None) -> datasets.Dataset | None:
    """The faces' ``train`` split (rendered on first use, resumable, cached), or None when none are asked for."""
    if not settings.public_faces:
        return None
    return load_identity_dataset(FACES_DATASET, FACES_CONFIG, cache_dir=cache_dir, **settings.public_faces_options())[
        "train"
    ]


def public_faces_record(settings: PublicFacesSettings, faces: datasets.Dataset, used_as: str) -> dict:
    """The faces' entry in a provenance ``data["public_data"]`` list: options, what they trained, fingerprints."""
    fingerprints = image_fingerprints(faces)
    return {
        "dataset_name": FACES_DATASET,
        "dataset_config": FACES_CONFIG,
        **settings.public_faces_options(),
        "used_as": used_as,
        "num_identities": len(faces.features["label"].names),
        "num_train_images": len(faces),
        "train_images": fingerprints,
        "fingerprint": hashlib.sha256("".join(sorted(fingerprints)).encode()).hexdigest()[:20],
        "licence": FACES_LICENCE,
    }


def with_public_faces(
    train: datasets.Dataset, relabel: torch.Tensor, faces: datasets.Dataset
) -> tuple[datasets.Dataset, torch.Tensor]:
    """``train`` (stored labels renumbered by ``relabel``, -1 dropped) followed by the faces, each face one more
    identity after the kept ones; returns the joined images and labels and the joined ``relabel``."""
    columns = ["image", "label"]
    offset, kept, num_faces = len(relabel), int((relabel >= 0).sum()), len(faces.features["label"].names)
    train = train.select_columns(columns).cast_column("label", datasets.Value("int64"))
    faces = faces.select_columns(columns).cast_column("label", datasets.Value("int64"))
    faces = faces.map(
        lambda labels: {"label": [label + offset for label in labels]}, input_columns="label", batched=True
    )
    joined = datasets.concatenate_datasets([train, faces])
    return joined, torch.cat([relabel, torch.arange(num_faces) + kept])


def with_face_identities(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, faces: torch.Tensor, face_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors of a public split followed by the faces', each face one more identity after ``num_classes``."""
    return torch.cat([images, faces]), torch.cat([labels, face_labels + num_classes])
