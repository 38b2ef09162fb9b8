"""Small identity sets written to disk in the forms users keep them (insightface RecordIO, Parquet shards), for
the streaming tests: five identities of 2-5 seeded 12x12 grayscale PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from rlsyn_trl.data.recordio import write_record_pair

COUNTS = [3, 5, 2, 4, 3]  # images per identity


def face(label: int, number: int) -> bytes:
    rng = np.random.default_rng(100 * label + number)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_records(folder: Path) -> Path:
    write_record_pair(folder, [(label, face(label, n)) for label, count in enumerate(COUNTS) for n in range(count)])
    return folder


def write_parquet(folder: Path) -> Path:
    """Three Parquet shards with small row groups (several shards per file), identities interleaved by row."""
    rows = [(f"p{label}", face(label, n)) for n in range(max(COUNTS)) for label, c in enumerate(COUNTS) if n < c]
    features = datasets.Features({"photo": datasets.Image(), "person": datasets.Value("string")})
    for index in range(3):
        part = rows[index::3]
        data = {"photo": [{"bytes": b, "path": None} for _, b in part], "person": [p for p, _ in part]}
        path = folder / "data" / f"train-{index:05d}-of-00003.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(data, features=features).to_parquet(str(path), batch_size=2)
    return folder
