"""insightface's ``train.rec`` / ``train.idx`` read without mxnet: a RecordIO pair written here byte for byte as
MXNet writes it reads back the same images and labels, through ``casia_webface`` with the image-folder form's split
options and features, and a truncated ``.rec`` or a missing ``.idx`` fails naming the file and what was expected."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from rlsyn_trl.data import load_identity_dataset
from rlsyn_trl.data.casia_webface import select_subset
from rlsyn_trl.data.recordio import RecordFile, unpack_header

MAGIC = 0xCED7230A
COUNTS = [3, 5, 2, 4]  # images per identity (class labels 0..3)


def encode_record(payload: bytes) -> bytes:
    """dmlc-core's RecordIOWriter::WriteRecord: a payload holding the magic at a 4-byte boundary is cut there into
    parts (flag 1, 2..., 3), the magic itself dropped; only the last part is padded."""
    magic = struct.pack("<I", MAGIC)
    out, start = b"", 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i : i + 4] == magic:
            out += magic + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start)) + payload[start:i]
            start = i + 4
    out += magic + struct.pack("<I", ((3 if start else 0) << 29) | (len(payload) - start)) + payload[start:]
    return out + b"\0" * (-len(payload) % 4)


def pack(labels, image: bytes = b"", record_id: int = 0) -> bytes:
    """MXNet's recordio.pack: IRHeader (flag, label, id, id2), ``flag`` float labels when several, the image."""
    if isinstance(labels, (int, float)):
        return struct.pack("<IfQQ", 0, float(labels), record_id, 0) + image
    return struct.pack("<IfQQ", len(labels), 0.0, record_id, 0) + struct.pack(f"<{len(labels)}f", *labels) + image


def face_png(label: int, number: int) -> bytes:
    rng = np.random.default_rng(10 * label + number)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_insightface_pair(folder: Path, with_magic_inside: bool = True) -> dict[int, tuple[int, bytes]]:
    """train.rec / train.idx as insightface lays them out: record 0 the header (label: first identity record, end),
    image records 1..N, then one record per identity labelled with its image range. Returns key -> (label, image)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, key = {}, 1
    for label, count in enumerate(COUNTS):
        for number in range(count):
            images[key] = (label, face_png(label, number))
            key += 1
    if with_magic_inside:  # a payload holding the magic at a 4-byte boundary: written in parts, read back whole
        label, png = images[2]
        images[2] = (label, png + b"\0" * (-len(png) % 4) + struct.pack("<I", MAGIC) + b"tail")
    first_identity = key
    records = {0: pack([first_identity, first_identity + len(COUNTS)])}
    for image_key, (label, data) in images.items():
        records[image_key] = pack(label, data, image_key)
    start = 1
    for label, count in enumerate(COUNTS):
        records[first_identity + label] = pack([start, start + count])
        start += count
    offset, rec, idx = 0, b"", []
    for record_key, payload in records.items():
        idx.append(f"{record_key}\t{offset}\n")
        encoded = encode_record(payload)
        rec += encoded
        offset += len(encoded)
    (folder / "train.rec").write_bytes(rec)
    (folder / "train.idx").write_text("".join(idx))
    return images


def test_records_read_back_the_same_images_and_labels(tmp_path):
    images = write_insightface_pair(tmp_path / "rec")
    assert struct.pack("<I", MAGIC) in images[2][1]  # the multi-part record is really there
    with RecordFile(tmp_path / "rec" / "train.rec") as records:
        assert records.image_keys() == list(images)
        for key, (label, data) in images.items():
            header, image = records.image(key)
            assert header.labels == (float(label),) and header.id == key and image == data
        header = records.header(0)
        assert header.flag == 2 and header.labels == (len(images) + 1, len(images) + 1 + len(COUNTS))
    header, rest = unpack_header(pack([1.5, 2.5], b"jpg"), "test")
    assert header.labels == (1.5, 2.5) and rest == b"jpg"


def test_casia_webface_reads_the_pair_like_the_image_folders(tmp_path):
    images = write_insightface_pair(tmp_path / "faces_webface_112x112", with_magic_inside=False)
    cache = str(tmp_path / "cache")
    whole = load_identity_dataset("casia_webface", data_dir=str(tmp_path / "faces_webface_112x112"), cache_dir=cache)
    train = whole["train"]
    assert train.features["label"].names == ["0", "1", "2", "3"] and len(train) == sum(COUNTS)
    raw = train.cast_column("image", datasets.Image(decode=False))
    for row in range(len(train)):
        key = int(train[row]["source"].removeprefix("train.rec#"))
        assert raw[row]["image"]["bytes"] == images[key][1] and train[row]["label"] == images[key][0]
    assert train[0]["image"].size == (12, 12) and train[0]["identity"] == "0"

    # The stages' shots (images per identity) and split seed, as for the folder form: the same draw.
    subset = load_identity_dataset(
        "casia_webface", data_dir=str(tmp_path / "faces_webface_112x112"), cache_dir=cache, shots=3, seed=5,
        num_identities=2,
    )["train"]  # fmt: skip
    by_identity = {}
    for key, (label, _) in images.items():
        by_identity.setdefault(str(label), []).append(f"{key:02d}")
    expected = select_subset(by_identity, 2, 3, seed=5)
    assert subset.features["label"].names == list(expected)
    assert sorted(subset["source"][:]) == sorted(f"train.rec#{int(k)}" for ks in expected.values() for k in ks)


def test_truncated_rec_and_missing_idx_fail_naming_the_file(tmp_path):
    folder = tmp_path / "rec"
    write_insightface_pair(folder)
    rec = folder / "train.rec"
    data = rec.read_bytes()
    offsets = [int(line.split("\t")[1]) for line in (folder / "train.idx").read_text().splitlines()]
    rec.write_bytes(data[: offsets[5] + 20])  # cut inside record 5
    with pytest.raises(ValueError, match=rf"{rec} is truncated: record 5 at offset {offsets[5]} needs"):
        load_identity_dataset("casia_webface", data_dir=str(folder), cache_dir=str(tmp_path / "c"))
    rec.write_bytes(data[:-3])  # cut inside the last record, an identity record no image listing reads
    with pytest.raises(ValueError, match=r"is truncated: record 18 .*Re-download or re-copy train.rec"):
        load_identity_dataset("casia_webface", data_dir=str(folder), cache_dir=str(tmp_path / "c"))
    rec.write_bytes(data[: offsets[7]])  # cut at a record boundary: the records listed past the end
    with pytest.raises(ValueError, match=rf"truncated: record 7 at offset {offsets[7]} needs 8 bytes but the file"):
        RecordFile(rec)
    rec.write_bytes(b"\0" * 8 + data[8:])
    with pytest.raises(ValueError, match=r"no record at offset 0 \(record 0\): found 0x00000000 where the magic"):
        RecordFile(rec).header(0)
    (folder / "train.idx").unlink()
    with pytest.raises(FileNotFoundError, match=r"Missing RecordIO index .*train.idx: reading train.rec needs"):
        load_identity_dataset("casia_webface", data_dir=str(folder), cache_dir=str(tmp_path / "c"))
