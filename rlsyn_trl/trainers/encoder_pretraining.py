"""phi from public identities only: the identity feature extractor trained on identities disjoint from the private
target, for a team that has a benchmark's full data but no encoder.

The recipe (``recipes/pretrain_encoder.py``) composes the blocks here. :class:`EncoderPretrainConfig` names the data
phi trains on (``dataset_*``, any registered benchmark) and the private target it must never see (``target_*``).
:func:`resolve_public_identities` compares the two splits' identities from the builders' listings, before any image
is read: on the same benchmark an overlap is refused unless ``exclude_target_identities`` drops those identities (the
CASIA-WebFace case: every identity outside the chosen subset); different registered benchmarks hold different people,
but a user's own dataset (a Hub id or folder) may hold anyone, so its identities are compared by name as well.
:func:`streamed_batches` decodes and resizes only the images of each step, through a ``datasets`` transform and
DataLoader workers, so a 494k-image training set never sits in memory. The training loop, checkpoints and resume
are the priors' (:func:`.priors.train_encoder_on_batches`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import datasets
import torch
from huggingface_hub import ModelCardData

from ..cards import DATASET_TERMS, render_model_card
from ..data import IDENTITY_BUILDERS, StreamedSplit, identity_names
from ..data.preprocessing import preprocess_images
from ..data.streaming import preprocessed, stream_batches
from ..encoders import IdentityEncoder
from ..provenance import DataSplit, resolve_data_split
from ..settings import (
    DataSplitSettings,
    EncoderTrainingSettings,
    RuntimeSettings,
    SettingsError,
    SettingsGroup,
    StreamingSettings,
    check_settings,
    require,
    require_positive,
)
from ..utils.launch import local_batch_size
from .priors import public_config
from .public_faces import FACES_DATASET, FACES_LICENCE, PublicFacesSettings
from .training import Batches, batch_indices

logger = logging.getLogger(__name__)


@dataclass
class TargetSplitSettings(SettingsGroup):
    """The private target split whose identities phi must never see (unset fields: the benchmark's defaults)."""

    target_dataset_name: str = field(
        default="orl_faces", metadata={"help": "The private target benchmark (casia_webface, market1501, ...)."}
    )
    target_dataset_config: str | None = field(
        default=None, metadata={"help": "Its configuration (CASIA: subset_1k; ORL: private). Unset: its default."}
    )
    target_data_dir: str | None = field(
        default=None, metadata={"help": "Its local copy. Unset: data_dir when the benchmark is the same."}
    )
    target_shots: int | None = field(default=None, metadata={"help": "Its shots (CASIA: images per identity)."})
    target_split_seed: int | None = field(default=None, metadata={"help": "Its split seed (CASIA: the subset's)."})
    exclude_target_identities: bool = field(
        default=False,
        metadata={
            "help": "Drop the target's identities from the training data (same benchmark only: CASIA-WebFace "
            "without the chosen subset). False: any shared identity is refused."
        },
    )

    def check(self) -> None:
        from ..data import IDENTITY_BUILDERS, is_user_dataset

        require(
            self.target_dataset_name in IDENTITY_BUILDERS or is_user_dataset(self.target_dataset_name),
            "target_dataset_name",
            self.target_dataset_name,
            f"not a registered identity benchmark ({sorted(IDENTITY_BUILDERS)}), an existing folder or a Hub "
            "dataset id (owner/name).",
        )
        require_positive(self, "target_shots", allow_none=True)

    def target_split(self, data_dir: str | None = None) -> DataSplit:
        """The resolved target split (``data_dir``: the source's copy, used when the benchmark is the same)."""
        settings = SimpleNamespace(
            dataset_name=self.target_dataset_name,
            dataset_config=self.target_dataset_config,
            data_dir=self.target_data_dir or data_dir,
            shots=self.target_shots,
            split_seed=self.target_split_seed,
        )
        return resolve_data_split(settings)


@dataclass
class EncoderPretrainConfig(
    DataSplitSettings,
    StreamingSettings,
    TargetSplitSettings,
    PublicFacesSettings,
    RuntimeSettings,
    EncoderTrainingSettings,
):
    """The encoder pre-training recipe's settings; each field is a YAML key / CLI flag.

    ``dataset_*`` (:class:`DataSplitSettings`) is the data phi trains on, ``target_*`` the private split it must
    never see, ``public_faces*`` synthetic faces trained on beside it; the encoder and its training come from
    :class:`EncoderTrainingSettings`.
    """

    dataset_name: str | None = field(
        default="orl_faces", metadata={"help": "The benchmark phi trains on (its train split)."}
    )
    dataset_config: str | None = field(
        default="public", metadata={"help": "Its configuration (ORL: public; CASIA-WebFace: default)."}
    )
    output_dir: str = field(
        default="outputs/orl_faces/encoder", metadata={"help": "The encoder folder (weights, card, provenance)."}
    )
    resolution: int = field(default=32, metadata={"help": "Square input side of the encoder."})
    channels: int = field(default=1, metadata={"help": "1 (grayscale) or 3 (RGB)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Processes decoding the images (0: inline)."})
    checkpoint_every: int = field(default=500, metadata={"help": "Save a resumable checkpoint every this many steps."})
    resume: bool = field(default=False, metadata={"help": "Continue from the newest checkpoint in output_dir."})

    def __post_init__(self) -> None:
        check_settings(self)
        require_positive(self, "resolution", "checkpoint_every")
        require(self.channels in (1, 3), "channels", self.channels, "must be 1 (grayscale) or 3 (RGB).")
        require(
            self.dataloader_num_workers >= 0, "dataloader_num_workers", self.dataloader_num_workers, "must be >= 0."
        )
        require(
            not (self.streaming and self.public_faces),
            "public_faces",
            self.public_faces,
            "synthetic faces are built, not streamed: set --public_faces 0 with --streaming true, or stream nothing.",
        )
        same = (self.dataset_name, self.dataset_config) == (self.target_dataset_name, self.target_dataset_config)
        require(
            not same or self.exclude_target_identities,
            "dataset_config",
            self.dataset_config,
            f"is the private target itself ({self.target_dataset_name}/{self.target_dataset_config}); phi must never "
            "see a target identity. Train on other identities (another config or benchmark), or pass "
            "--exclude_target_identities true to drop the target's.",
        )
        require(
            not self.exclude_target_identities or self.dataset_name == self.target_dataset_name,
            "exclude_target_identities",
            self.exclude_target_identities,
            f"drops identities of the same benchmark only; {self.dataset_name} and {self.target_dataset_name} hold "
            "different people: set it to false.",
        )


@dataclass
class PublicIdentities:
    """The split phi trains on, the target it must not see and which of the split's identities are kept."""

    split: DataSplit
    target: DataSplit
    kept: list[str]
    excluded: list[str]
    num_target_identities: int | None  # None: another benchmark, whose identities are not listed


def resolve_public_identities(config: EncoderPretrainConfig) -> PublicIdentities:
    """The training split's identities minus the target's; a shared identity is refused unless
    ``exclude_target_identities``. Only folders and file names are listed: this runs before any image is read."""
    split, target = resolve_data_split(config), config.target_split(config.data_dir)
    if split.dataset_config is not None and split.dataset_config == public_config(split.dataset_name):
        split = dataclasses.replace(split, shots=None, split_seed=None)  # a public config has no split options
    names = identity_names(split.dataset_name, split.dataset_config, data_dir=split.data_dir, **split.options())
    registered = {split.dataset_name, target.dataset_name} <= set(IDENTITY_BUILDERS)
    if registered and split.dataset_name != target.dataset_name:  # other benchmarks: other people, copy not needed
        return PublicIdentities(split, target, names, [], None)
    target_names = identity_names(
        target.dataset_name, target.dataset_config, data_dir=target.data_dir, **target.options()
    )
    shared = set(names) & set(target_names)
    if shared and not config.exclude_target_identities:
        examples = ", ".join(sorted(shared)[:5])
        raise SettingsError(
            f"--dataset_config {split.dataset_config!r}: {len(shared)} of its {len(names)} identities "
            f"({examples}, ...) are identities of the private target {target.describe()}; phi must never see a "
            "target identity. Train on identities disjoint from the target (another config or benchmark), or pass "
            "--exclude_target_identities true to drop them."
        )
    kept = [name for name in names if name not in shared]
    if not kept:
        raise SettingsError(
            f"--dataset_config {split.dataset_config!r}: every identity of it belongs to the target "
            f"{target.describe()}; nothing is left to train on. Choose a config or benchmark with other identities."
        )
    return PublicIdentities(split, target, kept, sorted(shared), len(target_names))


def public_train_split(
    data: datasets.DatasetDict, identities: PublicIdentities
) -> tuple[datasets.Dataset | StreamedSplit, torch.Tensor]:
    """The ``train`` split without the excluded identities' images, and each stored label's new number over the
    kept identities (-1: excluded). The filter reads the label column only and stores an index mapping, not a copy
    of the images (a streamed split drops their shards' entries); the labels are renumbered as batches are drawn."""
    train = data["train"]
    names = train.features["label"].names
    relabel = torch.full((len(names),), -1, dtype=torch.long)
    for new, name in enumerate(identities.kept):
        relabel[names.index(name)] = new
    if identities.excluded and isinstance(train, StreamedSplit):
        train = train.keep(lambda label: bool(relabel[label] >= 0))
    elif identities.excluded:
        train = train.filter(lambda labels: (relabel[labels] >= 0).tolist(), input_columns="label", batched=True)
    return train, relabel


class StepSampler(torch.utils.data.Sampler[list[int]]):
    """The index lists of steps ``first``..``last - 1``, drawn one at a time (a long schedule is never listed)."""

    def __init__(self, indices: Callable[[int], torch.Tensor], first: int, last: int) -> None:
        self.indices, self.first, self.last = indices, first, last

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.first, self.last):
            yield self.indices(step).tolist()


def streamed_batches(
    train: datasets.Dataset | StreamedSplit,
    relabel: torch.Tensor,
    config: EncoderPretrainConfig,
    seed: int,
    process_index: int = 0,
    num_processes: int = 1,
) -> Batches:
    """``batch(step)`` for the encoder loop, decoding only the step's images (the schedule of
    :func:`.training.batch_indices`, so a resumed run draws the batches an uninterrupted one would).

    The images go through ``with_transform`` (decode, resize to ``resolution``, ``[-1, 1]``; labels renumbered by
    ``relabel``) inside DataLoader workers that prefetch the coming steps; a step asked out of order restarts the
    loader there. ``encoder_batch_size`` is global: each of ``num_processes`` processes decodes its own share.
    A streamed split (``--streaming true``) is read in its shuffled storage order instead
    (:func:`rlsyn_trl.data.streaming.stream_batches`), nothing built first.
    """
    if isinstance(train, StreamedSplit):
        stream = train.dataset(seed, config.shuffle_buffer, process_index, num_processes)
        local = local_batch_size(config.encoder_batch_size, num_processes, "encoder_batch_size")
        transform = preprocessed(config.resolution, config.channels, relabel)
        return stream_batches(stream, local, transform, config.dataloader_num_workers)

    def transform(batch: dict) -> dict:
        pixels = preprocess_images(batch["image"], config.resolution, config.channels)
        return {"pixel_values": pixels, "labels": relabel[torch.tensor(batch["label"])]}

    streamed = train.with_transform(transform, columns=["image", "label"])
    indices = batch_indices(
        len(streamed), config.encoder_batch_size, seed, process_index, num_processes, "encoder_batch_size"
    )
    state: dict = {"next": None, "iterator": None}

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if state["next"] != step:
            sampler = StepSampler(indices, step, config.encoder_steps)
            loader = torch.utils.data.DataLoader(
                streamed,
                batch_sampler=sampler,
                num_workers=config.dataloader_num_workers,
                generator=torch.Generator().manual_seed(seed),  # its own: the augmentation's RNG stays untouched
            )
            state["iterator"] = iter(loader)
        state["next"] = step + 1
        items = next(state["iterator"])
        return items["pixel_values"], items["labels"]

    return batch


def encoder_card(
    config: EncoderPretrainConfig,
    encoder: IdentityEncoder,
    identities: PublicIdentities,
    num_images: int,
    steps: int,
    num_face_images: int = 0,
) -> str:
    """The encoder's model card (``identity_encoder.md``): data, the target it never saw, training; with
    ``num_face_images`` synthetic public faces, how many and their licence."""
    exclusion = f", after dropping the target's {len(identities.excluded)} identities" if identities.excluded else ""
    faces = ""
    if num_face_images:
        faces = (
            f"\n- Synthetic public faces: {config.public_faces} people who do not exist ({num_face_images} images, "
            f"`synthetic_faces` seed {config.public_faces_seed}), one identity each. Their {FACES_LICENCE}."
        )
    terms = DATASET_TERMS[FACES_DATASET].metadata() if num_face_images else {}  # the faces' terms bind phi
    return render_model_card(
        "identity_encoder.md",
        ModelCardData(
            library_name="rlsyn-trl", tags=["rlsyn-trl", "identity-encoder", "face-recognition", "reid"], **terms
        ),
        model_name=Path(config.output_dir).name,
        resolution=encoder.config.image_size,
        channel_text="RGB" if encoder.config.num_channels == 3 else "grayscale",
        embedding_size=encoder.config.embedding_size,
        target=identities.target.describe(),
        repo_or_path=config.output_dir,
        dataset=identities.split.describe(),
        num_identities=len(identities.kept),
        num_images=num_images,
        exclusion_text=exclusion,
        public_faces_text=faces,
        target_text=(
            "another benchmark: other people"
            if identities.num_target_identities is None
            else f"{identities.num_target_identities} identities, none trained on: checked before training"
        ),
        steps=steps,
        batch_size=config.encoder_batch_size,
        learning_rate=config.encoder_lr,
        cosface_scale=config.cosface_scale,
        cosface_margin=config.cosface_margin,
    )


def target_record(identities: PublicIdentities) -> dict:
    """The provenance section naming the target phi never saw and the identities dropped for it."""
    target = {key: value for key, value in dataclasses.asdict(identities.target).items() if key != "data_dir"}
    return {**target, "num_identities": identities.num_target_identities, "excluded": identities.excluded}
