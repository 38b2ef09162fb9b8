"""Streamed identity splits mean what built ones mean: the same images, labels, identities and provenance record,
whichever source holds them, and every image once per epoch however the stream is shuffled or split."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from stored_identities import COUNTS, write_parquet, write_records

from rlsyn_trl.data import StreamedSplit, dataset_to_tensors
from rlsyn_trl.data.recordio import RecordFile
from rlsyn_trl.data.streaming import preprocessed, stream_batches
from rlsyn_trl.provenance import DataSplit, image_fingerprints


def splits(tmp_path: Path) -> list[DataSplit]:
    records, parquet = write_records(tmp_path / "rec"), write_parquet(tmp_path / "parquet")
    return [
        DataSplit("casia_webface", None, str(records), 2, 3),
        DataSplit(str(parquet), None, None, 2, 1),
        DataSplit(str(parquet), None, None, None, 0),
    ]


def test_streamed_splits_choose_the_built_images_and_labels(tmp_path, monkeypatch):
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache")
    for split in splits(tmp_path):
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        streamed = split.load(streaming=True)
        assert not list((tmp_path / "cache").rglob("*.arrow")), "a streamed split builds nothing"
        built = split.load()
        assert sorted(built) == sorted(streamed), split.describe()
        for name, part in built.items():
            assert isinstance(streamed[name], StreamedSplit) and len(streamed[name]) == len(part)
            assert streamed[name].features["label"].names == part.features["label"].names
            assert streamed[name].labels() == part["label"]
            assert image_fingerprints(streamed[name]) == image_fingerprints(part)
        assert split.record(streamed) == split.record(built)  # what later stages check against
        images, labels = dataset_to_tensors(built["train"], 16)
        epoch = list(streamed["train"].dataset())
        order = [item["order"] for item in epoch]
        assert sorted(order) == list(range(len(images)))
        pixels, streamed_labels = preprocessed(16, 1)(
            [item["image"] for item in epoch], torch.tensor([i["label"] for i in epoch])
        )
        assert torch.equal(pixels, images[order]) and torch.equal(streamed_labels, labels[order])


def test_an_epoch_holds_every_image_once_shuffled_or_split(tmp_path):
    split = DataSplit("casia_webface", None, str(write_records(tmp_path / "rec")), None, 0)
    train = split.load(streaming=True)["train"]
    train.shards = [
        type(s)(s.kind, s.path, s.part, s.column, s.items[i : i + 3])
        for s in train.shards
        for i in range(0, len(s.items), 3)
    ]
    everything = list(range(len(train)))
    fingerprints = train.fingerprints()
    shuffled = list(train.dataset(seed=1, shuffle_buffer=4))  # read from several shards at once, on threads
    assert [fingerprints[i["order"]] for i in shuffled] == [
        hashlib.sha256(i["image"]).hexdigest()[:20] for i in shuffled
    ]
    first = [item["order"] for item in shuffled]
    assert sorted(first) == everything and first != everything
    assert first == [item["order"] for item in train.dataset(seed=1, shuffle_buffer=4)]  # the seed decides
    for processes in (2, 3):  # shards dividing evenly, and not
        shares = [[i["order"] for i in train.dataset(1, 4, rank, processes)] for rank in range(processes)]
        assert sorted(sum(shares, [])) == everything, processes  # each image read by one process only


def test_batches_resume_where_an_uninterrupted_run_is(tmp_path):
    split = DataSplit("casia_webface", None, str(write_records(tmp_path / "rec")), None, 0)
    stream = split.load(streaming=True)["train"].dataset(seed=0, shuffle_buffer=5)
    batches = stream_batches(stream, 4, preprocessed(8, 1))
    run = [batches(step) for step in range(6)]  # 24 images: past the 17 of one epoch
    resumed = stream_batches(stream, 4, preprocessed(8, 1))
    for step in (4, 5):
        assert all(torch.equal(a, b) for a, b in zip(resumed(step), run[step]))


def test_streaming_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="--streaming true reads CASIA-WebFace.*--streaming false"):
        DataSplit("orl_faces", "private", None, 1, 0).load(streaming=True)
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "train.csv").write_text("image,person\na.png,x\n")
    with pytest.raises(ValueError, match="read as csv: set --streaming false"):
        DataSplit(str(folder), None, None, None, 0).load(streaming=True)
    assert len(RecordFile(write_records(tmp_path / "rec") / "train.rec").image_keys()) == sum(COUNTS)
