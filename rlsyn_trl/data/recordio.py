"""MXNet RecordIO (insightface's ``train.rec`` / ``train.idx``) read in pure Python, so no mxnet is needed.

insightface re-distributes its aligned face training sets (``faces_webface_112x112``, ``faces_emore``...) as one
``train.rec`` of records and a ``train.idx`` of ``key<TAB>offset`` lines. Each record is a little-endian uint32
magic ``0xced7230a``, a uint32 whose upper 3 bits are a continuation flag and lower 29 bits the part's length, then
the part, padded to 4 bytes. A payload holding the magic at a 4-byte boundary is cut there into parts (flags 1 start,
2 middle, 3 end; 0 is a whole record), and the magic is put back between them on reading. A payload starts with the
``IRHeader`` struct ``IfQQ`` (flag, label, id, id2); when flag > 0 the label is ``flag`` float32s after the header.
The encoded image (JPEG or PNG) follows. Record 0 of insightface's releases is a header whose label holds the range
of the identity records, which follow the image records: images are then keys 1 .. label[0] - 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
IR_HEADER = struct.Struct("<IfQQ")
EXPECTED = (
    "Expected MXNet RecordIO as insightface writes it: records of magic 0xced7230a, a length word and the payload "
    "padded to 4 bytes, at the offsets train.idx lists."
)


@dataclass(frozen=True)
class RecordHeader:
    """A record's ``IRHeader``: ``labels`` holds ``flag`` floats when flag > 0, else the single label."""

    flag: int
    labels: tuple[float, ...]
    id: int
    id2: int


def read_index(path: Path) -> dict[int, int]:
    """``train.idx``: record key -> byte offset in ``train.rec``, in file order."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Missing RecordIO index {path}: reading {path.with_suffix('.rec').name} needs the index that ships next "
            "to it (text lines `key<TAB>offset`). Copy train.idx from the same release into the folder."
        )
    index = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            key, offset = line.split("\t")
            index[int(key)] = int(offset)
        except ValueError:
            raise ValueError(f"{path} line {number} is {line!r}; expected `key<TAB>offset` (two integers).") from None
    if not index:
        raise ValueError(f"{path} lists no record. Copy train.idx from the same release as train.rec.")
    return index


def unpack_header(payload: bytes, where: str) -> tuple[RecordHeader, bytes]:
    """Split a payload into its ``IRHeader`` and the encoded image."""
    if len(payload) < IR_HEADER.size:
        raise ValueError(f"{where} holds {len(payload)} bytes, fewer than its IRHeader's {IR_HEADER.size}. {EXPECTED}")
    flag, label, record_id, id2 = IR_HEADER.unpack_from(payload)
    start = IR_HEADER.size
    if flag > 0:
        end = start + 4 * flag
        if len(payload) < end:
            raise ValueError(f"{where}: its IRHeader announces {flag} labels that the record does not hold. {EXPECTED}")
        labels = struct.unpack_from(f"<{flag}f", payload, start)
        start = end
    else:
        labels = (label,)
    return RecordHeader(flag, tuple(labels), record_id, id2), payload[start:]


class RecordFile:
    """``train.rec`` with its ``train.idx``: records read by key, the file kept open between reads."""

    def __init__(self, rec_path: Path, idx_path: Path | None = None):
        self.path = Path(rec_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"Missing RecordIO file {self.path}. {EXPECTED}")
        self.index = read_index(Path(idx_path) if idx_path else self.path.with_suffix(".idx"))
        self.size = self.path.stat().st_size
        self._file = None
        self._check_complete()

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:  # datasets fingerprints and pickles builders: an open file does neither
        return {**self.__dict__, "_file": None}

    def read(self, key: int, header_only: bool = False) -> bytes:
        """The payload of record ``key`` (``header_only``: its first part's leading bytes, enough for the
        IRHeader and labels, without reading the image)."""
        if key not in self.index:
            raise KeyError(f"{self.path.with_suffix('.idx')} lists no record {key}.")
        if self._file is None:
            self._file = self.path.open("rb")
        offset, parts = self.index[key], []
        while True:
            self._file.seek(offset)
            head = self._file.read(8)
            if len(head) < 8:
                raise self._truncated(key, offset, 8, len(head))
            magic, word = struct.unpack("<II", head)
            if magic != MAGIC:
                raise ValueError(
                    f"{self.path} has no record at offset {offset} (record {key}): found 0x{magic:08x} where the "
                    f"magic belongs; a corrupted file, or an index from another file. {EXPECTED}"
                )
            flag, length = word >> 29, word & _LENGTH_MASK
            if flag not in (0, 1, 2, 3) or (not parts and flag not in (0, 1)) or (parts and flag not in (2, 3)):
                raise ValueError(f"{self.path}: record {key} has continuation flag {flag} out of order. {EXPECTED}")
            if offset + 8 + length > self.size:
                raise self._truncated(key, offset, 8 + length, self.size - offset)
            if header_only and not parts and (flag == 0 or length >= 256):
                return self._file.read(min(length, 256))
            parts.append(self._file.read(length))
            if flag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            offset += 8 + (length + 3) // 4 * 4

    def header(self, key: int) -> RecordHeader:
        return unpack_header(self.read(key, header_only=True), f"{self.path} record {key}")[0]

    def image(self, key: int) -> tuple[RecordHeader, bytes]:
        return unpack_header(self.read(key), f"{self.path} record {key}")

    def image_keys(self) -> list[int]:
        """The image records: 1 .. label[0] - 1 when record 0 is insightface's header, else every key."""
        first = min(self.index)
        header = self.header(first)
        if first == 0 and header.flag > 0:
            end = int(header.labels[0])
            keys = [key for key in self.index if 0 < key < end]
            if len(keys) != end - 1:
                raise ValueError(
                    f"{self.path}: its header record says the images are records 1..{end - 1}, but the index lists "
                    f"{len(keys)} of them. Copy train.idx from the same release as train.rec."
                )
            return keys
        return sorted(self.index)

    def _check_complete(self) -> None:
        """A cut file (an interrupted download or copy) fails here, at the record it cuts, before any is listed:
        the last record starting inside the file must end inside it, and no record may start past its end."""
        inside = [(offset, key) for key, offset in self.index.items() if offset < self.size]
        if inside:
            offset, key = max(inside)
            self.read(key, header_only=True)  # raises naming the cut record
        beyond = sorted((offset, key) for key, offset in self.index.items() if offset >= self.size)
        if beyond:
            offset, key = beyond[0]
            raise self._truncated(key, offset, 8, 0)

    def _truncated(self, key: int, offset: int, needed: int, left: int) -> ValueError:
        return ValueError(
            f"{self.path} is truncated: record {key} at offset {offset} needs {needed} bytes but the file holds "
            f"{max(left, 0)} from there ({self.size} bytes in all). Re-download or re-copy train.rec. {EXPECTED}"
        )


def encode_record(payload: bytes) -> bytes:
    """One record as dmlc-core's ``RecordIOWriter::WriteRecord`` writes it: a payload holding the magic at a 4-byte
    boundary is cut there into parts (flags 1, 2..., 3), the magic itself dropped; only the last part is padded."""
    out, start = [], 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            out.append(_MAGIC_BYTES + struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start)))
            out.append(payload[start:i])
            start = i + 4
    out.append(_MAGIC_BYTES + struct.pack("<I", ((3 if start else 0) << 29) | (len(payload) - start)))
    out.append(payload[start:] + b"\0" * (-(len(payload) - start) % 4))
    return b"".join(out)


def pack_record(labels: float | list[float], image: bytes = b"", record_id: int = 0) -> bytes:
    """MXNet's ``recordio.pack``: the IRHeader (flag, label, id, id2), ``flag`` float labels when several, the image."""
    if isinstance(labels, (int, float)):
        return IR_HEADER.pack(0, float(labels), record_id, 0) + image
    return IR_HEADER.pack(len(labels), 0.0, record_id, 0) + struct.pack(f"<{len(labels)}f", *labels) + image


def write_record_pair(folder: Path, images) -> int:
    """``train.rec`` / ``train.idx`` in insightface's layout from ``images``, an iterable of (label, encoded image)
    grouped by label: record 0 the header, image records 1..N, then one record per identity holding its image range.
    Written as it goes (a large set never sits in memory); returns the number of images. Benchmarks and tests make
    stand-ins of the released sets with it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranges: dict[int, list[int]] = {}
    with (folder / "train.rec.body").open("wb") as body, (folder / "train.idx.body").open("w") as index:
        offset, key = 0, 0
        for key, (label, data) in enumerate(images, start=1):
            ranges.setdefault(int(label), [key, key])[1] = key + 1
            encoded = encode_record(pack_record(int(label), data, key))
            index.write(f"{key}\t{offset}\n")
            body.write(encoded)
            offset += len(encoded)
    first_identity = key + 1
    header = encode_record(pack_record([first_identity, first_identity + len(ranges)]))
    tail = [encode_record(pack_record(span)) for span in ranges.values()]
    with (folder / "train.rec").open("wb") as rec, (folder / "train.idx").open("w") as idx:
        rec.write(header)
        idx.write("0\t0\n")
        with (folder / "train.rec.body").open("rb") as body:
            while block := body.read(2**22):
                rec.write(block)
        for line in (folder / "train.idx.body").open():
            record_key, at = line.split("\t")
            idx.write(f"{record_key}\t{int(at) + len(header)}\n")
        at = len(header) + offset
        for number, encoded in enumerate(tail):
            idx.write(f"{first_identity + number}\t{at}\n")
            rec.write(encoded)
            at += len(encoded)
    (folder / "train.rec.body").unlink()
    (folder / "train.idx.body").unlink()
    return key
