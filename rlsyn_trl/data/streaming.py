"""Identity data streamed from where it is kept, so a stage starts training without building the set first.

Building (:func:`rlsyn_trl.data.load_identity_dataset`) copies every chosen image into a ``datasets`` Arrow cache
before the first step: minutes and gigabytes for CASIA-WebFace's 494k images. Streamed, the split is decided by one
cheap pass over the labels alone (RecordIO: ``train.idx`` and the records' headers; Parquet: the identity column
read with pyarrow; Arrow files: the column, memory-mapped; an ``imagefolder`` tree: the folder names), through the
very functions the builders use (:func:`.casia_webface.select_subset`, :func:`.user_data.split_rows`), so ``shots``,
the split seed and ``num_identities`` choose the same images with the same label numbers. The images are then read
shard by shard (RecordIO: runs of records; Parquet: row groups) and decoded batch by batch as training asks for
them, through a ``datasets.IterableDataset``: shuffled by shard order and a buffer with the run's seed, split between
processes with ``datasets.distributed.split_dataset_by_node``. A Hub dataset's files are fetched into the Hugging
Face cache at the pinned commit first, as for a build (:func:`.user_data.locate_user_dataset`), and read from there.

What differs from a built set: the order images come in (storage order, shuffled by shards and a buffer, instead of
a permutation of all of them), and a changed source is noticed when a record is written, not before training.
"""

from __future__ import annotations

import bisect
import copy
import functools
import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from PIL import Image

from ._folders import IMAGE_SUFFIXES
from ._options import identity_features
from .casia_webface import CasiaWebFace
from .preprocessing import preprocess_images
from .recordio import RecordFile
from .user_data import UserIdentitiesConfig, identity_columns, split_rows

SHARD_SIZE = 1024  # records or rows per shard (a Parquet row group is one shard): the unit of shuffling and splitting
STREAM_FEATURES = datasets.Features(
    {"image": datasets.Value("binary"), "label": datasets.Value("int64"), "order": datasets.Value("int64")}
)


@dataclass(frozen=True)
class Shard:
    """A run of images read together: ``kind`` (``recordio``, ``parquet``, ``arrow`` or ``file``), the file, the
    Parquet row group, the image column, and per image (record key, row or file path; label; its position in the
    built split)."""

    kind: str
    path: str
    part: int
    column: str | None
    items: tuple[tuple[int | str, int, int], ...]


# datasets fills a shuffle buffer from several shards at once, on threads: the caches are filled under a lock, and
# each shard reads RecordIO through its own file handle (a shared one would interleave seeks and reads).
_CACHE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _record_index(path: str) -> RecordFile:
    return RecordFile(Path(path))


def _record_file(path: str) -> RecordFile:
    """``path``'s records with their own file handle; the index is read once per process, not once per shard."""
    with _CACHE_LOCK:
        return copy.copy(_record_index(path))  # shares the index; no handle is copied (RecordFile.__getstate__)


@functools.lru_cache(maxsize=8)
def _memory_mapped(path: str):
    return datasets.Dataset.from_file(path).data  # nothing is copied


def _arrow_table(path: str):
    with _CACHE_LOCK:
        return _memory_mapped(path)


def _stored(value: dict) -> bytes:
    return value["bytes"] if value.get("bytes") is not None else Path(value["path"]).read_bytes()


def read_shard(shard: Shard) -> Iterator[tuple[bytes, int, int]]:
    """(encoded image, label, position in the built split) of each image of ``shard``, in storage order."""
    if shard.kind == "recordio":
        with _record_file(shard.path) as records:
            for key, label, order in shard.items:
                yield records.image(int(key))[1], label, order
    elif shard.kind == "parquet":
        import pyarrow.parquet as pq

        column = pq.ParquetFile(shard.path).read_row_group(shard.part, columns=[shard.column]).column(shard.column)
        for row, label, order in shard.items:
            yield _stored(column[int(row)].as_py()), label, order
    elif shard.kind == "arrow":
        column = _arrow_table(shard.path).column(shard.column)
        for row, label, order in shard.items:
            yield _stored(column[int(row)].as_py()), label, order
    else:
        for path, label, order in shard.items:
            yield Path(path).read_bytes(), label, order


def _examples(shards: list[Shard]) -> Iterator[dict]:
    for shard in shards:
        for data, label, order in read_shard(shard):
            yield {"image": data, "label": label, "order": order}


class StreamedSplit:
    """One split of a streamed identity dataset: its identities (``features["label"]``, as the built split's), its
    size, and its images as an iterable dataset (:meth:`dataset`) read lazily from the shards."""

    def __init__(self, names: list[str], shards: list[Shard]):
        self.names, self.shards = list(names), list(shards)
        self.features = identity_features(self.names)

    def __len__(self) -> int:
        return sum(len(shard.items) for shard in self.shards)

    def labels(self) -> list[int]:
        """Each image's label, in the built split's order."""
        return [label for _, label in sorted((order, label) for s in self.shards for _, label, order in s.items)]

    def keep(self, keep: Callable[[int], bool]) -> StreamedSplit:
        """The images whose label ``keep`` accepts (labels and identities unchanged)."""
        shards = [Shard(s.kind, s.path, s.part, s.column, tuple(i for i in s.items if keep(i[1]))) for s in self.shards]
        return StreamedSplit(self.names, [shard for shard in shards if shard.items])

    def dataset(
        self, seed: int = 0, shuffle_buffer: int = 0, process_index: int = 0, num_processes: int = 1
    ) -> datasets.IterableDataset:
        """``image`` (encoded bytes), ``label`` and ``order`` of each image, undecoded (skipping ahead costs no
        decoding). ``shuffle_buffer`` > 0 shuffles the shard order and a buffer of that many images with ``seed``
        (a new order each ``set_epoch``); with several processes each reads its own share (shards when they divide
        evenly, else every ``num_processes``-th image), so no image is read twice in an epoch."""
        stream = datasets.IterableDataset.from_generator(
            _examples, features=STREAM_FEATURES, gen_kwargs={"shards": self.shards}
        )
        if shuffle_buffer:
            stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
        if num_processes > 1:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(stream, rank=process_index, world_size=num_processes)
        return stream

    def fingerprints(self) -> list[str]:
        """The provenance fingerprint of each image (a hash of its stored bytes, as for a built split), in the built
        split's order: one pass reading the bytes, decoding nothing."""
        found = {}
        for shard in self.shards:
            for data, _, order in read_shard(shard):
                found[order] = hashlib.sha256(data).hexdigest()[:20]
        return [found[order] for order in sorted(found)]

    def selection_fingerprint(self) -> str:
        """A hash of the chosen images and the files they are read from (path, size, modification time), without
        reading an image: what a resumed run checks it continues on, where a built split hashes every image."""
        digest = hashlib.sha256()
        for shard in self.shards:
            stat = os.stat(shard.path) if shard.path else None
            digest.update(
                f"{shard.kind}\0{shard.path}\0{shard.part}\0{stat and (stat.st_size, stat.st_mtime_ns)}\n".encode()
            )
            digest.update(repr(shard.items).encode())
        return digest.hexdigest()[:20]


def decode_images(data: list[bytes]) -> list[Image.Image]:
    """Encoded images decoded as ``datasets.Image`` decodes a built split's, so both give the same pixels."""
    feature = datasets.Image()
    images = []
    for number, encoded in enumerate(data):
        try:
            images.append(feature.decode_example({"bytes": encoded, "path": None}))
        except Exception as error:  # PIL raises many types for corrupted data
            raise ValueError(
                f"Unreadable or corrupted streamed image (number {number} of its batch): {error}"
            ) from error
    return images


def stream_batches(
    dataset: datasets.IterableDataset,
    batch_size: int,
    transform: Callable[[list[bytes], torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    num_workers: int = 0,
) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batch(step)``: this process's next ``batch_size`` images of ``dataset``, epoch after epoch, through
    ``transform(images, labels)``. A step asked out of order (a resumed run) restarts the stream and skips the
    images of the steps before it, undecoded, so it continues with the batches an uninterrupted run would have
    had. ``num_workers`` DataLoader processes read the shards ahead."""
    state: dict = {"next": None, "items": None}

    def items() -> Iterator[dict]:
        for epoch in itertools.count():
            dataset.set_epoch(epoch)
            source = dataset
            if num_workers:
                source = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers)
            seen = 0
            for item in source:
                seen += 1
                yield item
            if not seen:
                raise ValueError(
                    "This process's share of the streamed training set is empty: fewer images than processes. "
                    "Launch fewer processes, or use the built set (--streaming false)."
                )

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if state["next"] != step:
            state["items"] = items()
            for _ in itertools.islice(state["items"], step * batch_size):
                pass
        state["next"] = step + 1
        chunk = list(itertools.islice(state["items"], batch_size))
        labels = torch.tensor([int(item["label"]) for item in chunk], dtype=torch.long)
        return transform([item["image"] for item in chunk], labels)

    return batch


def preprocessed(resolution, channels: int, relabel: torch.Tensor | None = None):
    """The transform of :func:`stream_batches` that gives what ``dataset_to_tensors`` gives a built split."""

    def transform(data: list[bytes], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = preprocess_images(decode_images(data), resolution=resolution, channels=channels)
        return images, labels if relabel is None else relabel[labels]

    return transform


# -- deciding the split from the labels alone ------------------------------------------------------------------------
def streamed_splits(builder: datasets.DatasetBuilder) -> dict[str, StreamedSplit]:
    """The splits ``builder`` would build, as streams: CASIA-WebFace (RecordIO or folders); a user's dataset is
    :func:`streamed_user_splits`."""
    if isinstance(builder, CasiaWebFace):
        return {"train": _casia_split(builder)}
    raise ValueError(
        f"--streaming true reads CASIA-WebFace and a Hub dataset or folder of your own; {builder.name} is built "
        "instead (it is small enough): set --streaming false."
    )


def _chunks(kind: str, path: str, column: str | None, items: list) -> list[Shard]:
    return [Shard(kind, path, 0, column, tuple(items[i : i + SHARD_SIZE])) for i in range(0, len(items), SHARD_SIZE)]


def _casia_split(builder: CasiaWebFace) -> StreamedSplit:
    subset = builder._subset  # headers only (RecordIO) or file names: no image is read
    items = [(file, label) for label, files in enumerate(subset.values()) for file in files]
    if builder._records is not None:
        ordered = sorted((int(key), label, order) for order, (key, label) in enumerate(items))
        shards = _chunks("recordio", str(builder._records.path), None, ordered)
    else:
        names = list(subset)
        paths = [(str(builder._root / names[label] / file), label, order) for order, (file, label) in enumerate(items)]
        shards = _chunks("file", "", None, paths)
    return StreamedSplit(list(subset), shards)


def streamed_user_splits(config: UserIdentitiesConfig) -> dict[str, StreamedSplit]:
    """The ``train`` and ``test`` splits :class:`.user_data.UserIdentities` would build from ``config``, as streams:
    the identity column alone is read to split (:func:`.user_data.split_rows`)."""
    try:
        source = datasets.load_dataset_builder(str(config.data_dir), config.source_config)
    except ValueError as error:
        raise ValueError(f"Cannot read the dataset {config.source} ({config.data_dir}): {error}") from error
    files = source.config.data_files
    if "train" not in files and len(files) != 1:
        raise ValueError(
            f"{config.source} has splits {sorted(files)} and none is `train`: keep the identities in `train`."
        )
    paths = [str(path) for path in (files["train"] if "train" in files else next(iter(files.values())))]
    if source.name == "parquet":
        features, labels, label, places, image = _parquet_labels(paths, config)
    elif source.name == "arrow":
        tables = [_arrow_table(path) for path in paths]
        features = datasets.Features.from_arrow_schema(tables[0].schema)
        image, label = identity_columns(features, config.source, config.image_column, config.label_column)
        labels = [value for table in tables for value in table.column(label).to_pylist()]
        places, start = [], 0
        for path, table in zip(paths, tables):
            places += [("arrow", path, 0, start + first, first) for first in range(0, len(table), SHARD_SIZE)]
            start += len(table)
    elif source.name == "imagefolder" and all(Path(path).suffix.lower() in IMAGE_SUFFIXES for path in paths):
        labels, label, image = [Path(path).parent.name for path in paths], "label", None
        features = datasets.Features({label: datasets.Value("string")})
        places = [("file", "", 0, first, first) for first in range(0, len(paths), SHARD_SIZE)]
    else:
        raise ValueError(
            f"--streaming true reads Parquet shards, Arrow files or an imagefolder tree (without metadata files); "
            f"{config.source} is read as {source.name}: set --streaming false to build it instead."
        )
    rows = split_rows(labels, features[label], config.source, config, label)
    starts = [place[3] for place in places]
    splits = {}
    for part, split in enumerate(("train", "test")):
        grouped: dict[int, list] = {}
        order = 0
        for number, parts in enumerate(rows.values()):
            for row in parts[part]:
                grouped.setdefault(bisect.bisect_right(starts, row) - 1, []).append((row, number, order))
                order += 1
        shards = []
        for at in sorted(grouped):
            kind, path, group, start, offset = places[at]
            where = (lambda row: paths[row]) if kind == "file" else (lambda row: row - start + offset)  # noqa: B023
            items = tuple((where(row), number, order) for row, number, order in grouped[at])
            shards.append(Shard(kind, path, group, image, items))
        if shards or split == "train":
            splits[split] = StreamedSplit(list(rows), shards)
    return splits


def _parquet_labels(paths: list[str], config) -> tuple:
    """The identity column of every Parquet file (nothing else is read) and where each row group starts."""
    import pyarrow.parquet as pq

    features = datasets.Features.from_arrow_schema(pq.read_schema(paths[0]))
    image, label = identity_columns(features, config.source, config.image_column, config.label_column)
    labels, places, start = [], [], 0
    for path in paths:
        labels.extend(pq.read_table(path, columns=[label]).column(label).to_pylist())
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            places.append(("parquet", path, group, start, 0))
            start += metadata.row_group(group).num_rows
    return features, labels, label, places, image
