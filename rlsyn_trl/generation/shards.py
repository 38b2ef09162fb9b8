"""Run identity and resumable sampling: which samples a run holds, and the shards they are written in.

Each shard's seed derives from the base seed and the shard index alone, and each shard is written through a
temporary name, so a killed run resumes at the first missing shard with the same result; the manifest's fingerprint
keeps another run's shards out of the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ..data import tensor_to_pil
from ..generators import IdentityGenerator, ReferenceStart
from ..generators.sampling import broken_samples
from ..utils.io import atomic_write_text
from .config import GenerationConfig

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARDS_DIR = "shards"
RUN_FORMAT = "rlsyn-synthetic-shards/1"
SHARD_FEATURES = datasets.Features(
    {
        "sample_id": datasets.Value("int64"),
        "identity": datasets.Value("string"),
        "seed": datasets.Value("int64"),
        "image": datasets.Image(),
    }
)


# -- run identity ------------------------------------------------------------------------------------------------
def shard_seed(seed: int, shard: int) -> int:
    """A shard's seed from the base seed and the shard index only (independent streams via numpy's SeedSequence)."""
    state = np.random.SeedSequence([seed, shard]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)  # fits the int64 `seed` column


@dataclass(frozen=True)
class SamplingPlan:
    """Which samples exist: identity-major global ids ``0 .. K*N-1`` cut into shards of ``shard_size``."""

    identities: tuple[str, ...]
    samples_per_identity: int
    shard_size: int
    seed: int

    @property
    def total(self) -> int:
        return len(self.identities) * self.samples_per_identity

    @property
    def num_shards(self) -> int:
        return math.ceil(self.total / self.shard_size)

    def sample_ids(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.total, (shard + 1) * self.shard_size))

    def identity(self, sample_id: int) -> str:
        return self.identities[sample_id // self.samples_per_identity]


def _check_writable(folder: Path) -> None:
    """Fail at once, with the folder named, rather than after minutes of sampling."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-", suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(
            f"Cannot write to the output folder {folder} ({error.strerror or error}). Choose an output_dir you can "
            "write to, or fix its permissions."
        ) from error


def _check_manifest(output: Path, run: dict) -> None:
    """Write the run's manifest, or check that the folder's shards belong to this very run."""
    fingerprint = hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()
    path = output / MANIFEST
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing.get("fingerprint") != fingerprint:
            old = existing.get("run", {})
            changed = sorted(key for key in run.keys() | old.keys() if run.get(key) != old.get(key))
            details = "; ".join(f"{key}: {old.get(key)!r} -> {run.get(key)!r}" for key in changed)
            raise FileExistsError(
                f"{output} holds the shards of a different generation run (changed: {details}). Mixing them would "
                "give a dataset no single setting produced: choose another output_dir, or delete this one to restart."
            )
        return
    shards = output / SHARDS_DIR
    if shards.is_dir() and any(shards.glob("*.parquet")):
        raise FileExistsError(f"{shards} holds shards without a {MANIFEST}: they cannot be attributed to this run.")
    atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "run": run}, indent=2))


# -- sampling ----------------------------------------------------------------------------------------------------
def shard_path(folder: Path, shard: int) -> Path:
    return folder / f"shard-{shard:05d}.parquet"


def require_real_samples(images: torch.Tensor, sample_ids: range, adapter: str | None = None) -> None:
    """Refuse samples that are NaN/infinite or one flat colour (:func:`broken_samples`): a diverged generator, never
    a dataset."""
    broken = broken_samples(images)
    if bool(broken.any()):
        ids = [sample_ids[i] for i in broken.nonzero().flatten().tolist()]
        source = f"the adapter {adapter}" if adapter else "the generator"
        raise ValueError(
            f"{len(ids)} of {len(images)} samples (ids {ids[:5]}{'...' if len(ids) > 5 else ''}) are non-finite or "
            f"one flat colour: {source} is broken, e.g. a diverged training (check its loss and reward logs), so "
            "nothing is written. Retrain it with a lower learning rate."
        )


def _write_shard(
    path: Path, images: torch.Tensor, identities: list[str], sample_ids: range, seed: int, process_index: int = 0
) -> None:
    """One shard as a parquet file, through a temporary name (one per process): a file under the final name is always
    complete."""
    table = datasets.Dataset.from_dict(
        {
            "sample_id": list(sample_ids),
            "identity": identities,
            "seed": [seed] * len(identities),
            "image": tensor_to_pil(images),
        },
        features=SHARD_FEATURES,
    ).data.table
    tmp = path.with_name(f"{path.name}.{process_index}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _sample_shards(
    generator: IdentityGenerator,
    plan: SamplingPlan,
    folder: Path,
    config: GenerationConfig,
    reference: ReferenceStart | None = None,
    process_index: int = 0,
    num_processes: int = 1,
) -> None:
    """Generate every missing shard of this process (shard ``i`` belongs to process ``i % num_processes``);
    leftovers of a write that was killed half-way are discarded first.

    With ``reference`` each sample starts from a real training image drawn, with its strength, from the shard seed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"*.{process_index}.tmp"):
        stale.unlink()
    mine = [shard for shard in range(plan.num_shards) if shard % num_processes == process_index]
    todo = [shard for shard in mine if not shard_path(folder, shard).is_file()]
    total = sum(len(plan.sample_ids(shard)) for shard in mine)
    done = total - sum(len(plan.sample_ids(shard)) for shard in todo)
    if done == total:
        logger.info("All %d samples are already written in %s: scoring them again", done, folder)
    elif done:
        logger.info("Resuming: %d of %d samples already written in %s", done, total, folder)
    desc = "generating" if num_processes == 1 else f"generating (process {process_index + 1}/{num_processes})"
    with tqdm(total=total, initial=done, unit="sample", desc=desc, disable=process_index > 0) as progress:
        for shard in todo:
            ids = plan.sample_ids(shard)
            identities = [plan.identity(sample_id) for sample_id in ids]
            seed = shard_seed(plan.seed, shard)
            images = generator.sample(
                identities,
                seed=seed,
                num_inference_steps=config.num_inference_steps,
                eta=config.eta,
                **config.guidance_options(),
                batch_size=config.batch_size,
                reference=reference,
            )
            require_real_samples(images, ids, config.adapter)
            _write_shard(shard_path(folder, shard), images.cpu(), identities, ids, seed, process_index)
            progress.update(len(ids))


def _read_shards(plan: SamplingPlan, folder: Path) -> dict[str, list]:
    """All shards' rows in sample order, checked to hold every planned sample exactly once."""
    rows = pa.concat_tables([pq.read_table(shard_path(folder, shard)) for shard in range(plan.num_shards)])
    rows = rows.to_pydict()
    if rows["sample_id"] != list(range(plan.total)):
        raise RuntimeError(f"The shards in {folder} do not hold samples 0..{plan.total - 1} exactly once.")
    expected = [plan.identity(sample_id) for sample_id in range(plan.total)]
    if rows["identity"] != expected:
        raise RuntimeError(f"The shards in {folder} disagree with the sampling plan's identities.")
    return rows
