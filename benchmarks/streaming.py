"""Streamed against built identity data: time to the first training step and peak memory, by set size.

    OMP_NUM_THREADS=1 python benchmarks/streaming.py [--sizes 25000 100000] [--per_identity 50]

Writes seeded stand-ins of a large identity set in the two forms users keep one in: insightface's ``train.rec`` /
``train.idx`` (read as ``casia_webface --data_dir``) and a folder of Parquet shards (a Hub dataset's layout), each
image a 32x32 grayscale JPEG. Then, for each form, size and mode (``--streaming true`` or the built default), one
fresh process runs the recognizer recipe (tiny ResNet, batch 64, every image trains: ``shots`` unset) until its
first optimizer step ends, with an empty datasets cache, and reports the seconds from its start (imports excluded)
and its peak resident memory (``VmHWM``: this process's own, where ``ru_maxrss`` would carry the parent's size
over). The table gives the streamed/built ratios measured in the same run. Nothing is written outside a temporary
folder, which is removed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32


def faces(size: int, per_identity: int, seed: int = 0):
    """(label, JPEG bytes) grouped by label: an identity's pattern plus per-image noise, seeded."""
    rng = np.random.default_rng(seed)
    for label in range(size // per_identity):
        base = rng.integers(0, 256, (SIDE, SIDE)).astype(np.int16)
        for _ in range(per_identity):
            pixels = np.clip(base + rng.integers(-20, 21, (SIDE, SIDE)), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=90)
            yield label, buffer.getvalue()


def write_sets(root: Path, size: int, per_identity: int) -> dict[str, Path]:
    """The RecordIO pair and the Parquet folder of ``size`` images."""
    import datasets

    from rlsyn_trl.data.recordio import write_record_pair

    records, parquet = root / f"rec-{size}", root / f"parquet-{size}"
    write_record_pair(records, faces(size, per_identity))
    features = datasets.Features({"image": datasets.Image(), "person": datasets.Value("string")})
    table = list(faces(size, per_identity))
    shards = 8
    for index in range(shards):
        part = table[index * len(table) // shards : (index + 1) * len(table) // shards]
        data = {
            "image": [{"bytes": b, "path": None} for _, b in part],
            "person": [f"id{label:05d}" for label, _ in part],
        }
        path = parquet / "data" / f"train-{index:05d}-of-{shards:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(data, features=features).to_parquet(str(path), batch_size=1000)
    return {"recordio": records, "parquet": parquet}


def peak_mib() -> float:
    """This process's peak resident memory so far (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: Linux only")


def run_case(form: str, folder: str, streaming: bool, output: str) -> dict:
    """One measurement, in this (fresh) process: the recognizer recipe until its first step ends."""
    started = time.perf_counter()
    from transformers import TrainerCallback

    from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments, main
    from rlsyn_trl.recognizer import RecognizerConfig

    imported = time.perf_counter()
    imports_rss = peak_mib()

    class FirstStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            peak = peak_mib()
            result = {"seconds": time.perf_counter() - imported, "peak_mib": peak, "imports_mib": imports_rss,
                      "import_seconds": imported - started}  # fmt: skip
            print(json.dumps(result), flush=True)
            os._exit(0)  # the rest of the run (saving, the record's pass over the images) is not measured

    if form == "recordio":
        script = RecognizerScriptArguments(dataset_name="casia_webface", data_dir=folder, streaming=streaming)
    else:
        script = RecognizerScriptArguments(dataset_name=folder, streaming=streaming)
    config = RecognizerConfig(output_dir=output, max_steps=1, per_device_train_batch_size=64, report_to="none",
                              disable_tqdm=True, channels=1, resolution=[SIDE], save_strategy="no")  # fmt: skip
    import rlsyn_trl.recognizer.trainer as trainer

    original = trainer.RecognizerTrainer.__init__

    def with_probe(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(FirstStep())

    trainer.RecognizerTrainer.__init__ = with_probe
    main(script, config)
    raise RuntimeError("the run ended without a training step")


def measure(form: str, folder: Path, streaming: bool, work: Path) -> dict:
    cache = Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}  # fmt: skip
    command = [sys.executable, __file__, "--case", form, str(folder), str(int(streaming)), str(cache / "run")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    shutil.rmtree(cache, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{form} streaming={streaming} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25_000, 100_000])
    parser.add_argument("--per_identity", type=int, default=50, help="Images per identity.")
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        form, folder, streaming, output = args.case
        run_case(form, folder, streaming == "1", output)
        return
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="streaming-benchmark-"))
    results = {}
    try:
        for size in args.sizes:
            began = time.perf_counter()
            sets = write_sets(work, size, args.per_identity)
            print(f"# {size} images written in {time.perf_counter() - began:.0f} s", flush=True)
            for form, folder in sets.items():
                for streaming in (True, False):
                    results[form, size, streaming] = result = measure(form, folder, streaming, work)
                    print(f"# {form} {size} streaming={streaming}: {result}", flush=True)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| form | images | streamed: s to 1st step | built: s to 1st step | ratio | streamed: peak MiB | "
          "built: peak MiB | ratio |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for form in ("recordio", "parquet"):
        for size in args.sizes:
            s, b = results[form, size, True], results[form, size, False]
            print(f"| {form} | {size:,} | {s['seconds']:.1f} | {b['seconds']:.1f} | {s['seconds'] / b['seconds']:.3f} "
                  f"| {s['peak_mib']:.0f} | {b['peak_mib']:.0f} | {s['peak_mib'] / b['peak_mib']:.2f} |")  # fmt: skip
    imports = [r["imports_mib"] for r in results.values()]
    print(f"\nResident memory after the imports alone: {min(imports):.0f}-{max(imports):.0f} MiB.")


if __name__ == "__main__":
    main()
