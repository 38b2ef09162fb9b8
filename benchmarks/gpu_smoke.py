"""Smoke run of the paper-scale recipes: every stage of recipes/casia_webface, recipes/market1501 and the two
CUHK03-NP ones, recipes/cuhk03_labeled and recipes/cuhk03_detected (cold start, DDPO, generation, recognizer) runs a
few steps from its YAML through the recipe script itself, and prints timings.

    python benchmarks/gpu_smoke.py                 # paper scale: DiT-XL/2 + SD VAE, ResNet-50 (on a GPU)
    python benchmarks/gpu_smoke.py --tiny          # same families at tiny sizes, on a CPU (tests/test_paper_recipes.py)
    python benchmarks/gpu_smoke.py --full-size     # the paper's models at true size, little work, on a CPU, fp32 and
                                                   # bf16: FLOPs per step and H100 projections (true_size.py)

Only sizes and step counts are overridden (``overrides``, and each scale's own; ``--full-size`` also shrinks the
identities and sample counts, see true_size.py). Everything else comes from the YAMLs, whose relative paths
resolve under ``--output-dir``: the data are fixture trees generated at the YAMLs' ``data_dir`` paths in the
releases' exact layouts (CASIA-WebFace identity folders, Market-1501 split folders, insightface ``.bin`` pair
files, random images); the models are random-initialised stand-ins served from a local Hugging Face cache under the
YAMLs' repo ids (``facebook/DiT-XL-2-256`` in its diffusers layout, from the configs in
``rlsyn_trl.generators.paper_configs``; ``microsoft/resnet-50``), unless at paper scale the real weights are already
in your cache; the reward encoder is a random one at the YAMLs' ``encoder`` path (at ``--full-size``, a recognizer in
the recognizer YAML's architecture).
Per stage: wall time, optimizer steps, median seconds per step, samples per second and peak memory (CUDA
allocator, or the RSS high-water mark, reset before each stage, on a CPU; at ``--full-size`` each stage runs in a
process of its own, so that its peak is its own). Writes ``gpu_smoke.json`` (and ``true_size.json`` at
``--full-size``); exits 1 if a stage fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import os
import pickle
import runpy
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Before huggingface_hub and datasets are imported: they read these once, at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import huggingface_hub.constants  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import true_size  # noqa: E402  (benchmarks/, beside this script)
import yaml  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel  # noqa: E402
from flop_probes import StageProbe  # noqa: E402
from huggingface_hub import snapshot_download  # noqa: E402
from PIL import Image  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402
from transformers import ResNetConfig, ResNetForImageClassification  # noqa: E402

from rlsyn_trl.data.face_verification import VERIFICATION_SETS  # noqa: E402
from rlsyn_trl.encoders import IdentityEncoder, IdentityEncoderConfig  # noqa: E402
from rlsyn_trl.generators.paper_configs import PAPER_BASE_MODEL, dit_scheduler_config, dit_xl_2_config, sd_vae_config  # noqa: E402
from rlsyn_trl.recognizer.backbones import IResNetConfig  # noqa: E402
from rlsyn_trl.utils.runtime import setup_runtime  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("casia_webface", "market1501", "cuhk03_labeled", "cuhk03_detected")
REID_BENCHMARKS = BENCHMARKS[1:]
RECIPES = {"sft": "sft.py", "ddpo": "ddpo.py", "generate": "generate.py", "recognizer": "train_recognizer.py"}
DIT_ID, RESNET_ID = PAPER_BASE_MODEL, "microsoft/resnet-50"
CASIA_IDENTITIES = 1000  # the subset_1k config draws all of them
MARKET_TRAIN_IDS, MARKET_TEST_IDS = 18, 4  # at least 16 training identities for the 16 x 4 batches

# DiT-XL/2-256 and the Stable Diffusion VAE it runs in, as published: the package ships their configs.
DIT_XL_2, SD_VAE, DIT_SCHEDULER = dit_xl_2_config(), sd_vae_config(), dit_scheduler_config()


@dataclass(frozen=True)
class Scale:
    """Stand-in sizes (same families as the paper's models), fixture image sizes and the scale's own overrides."""

    dit: dict
    vae: dict
    resnet: dict
    encoder: dict
    iresnet: dict | None  # a folder ``iresnet_tiny`` of this IResNet config stands in for iresnet-50
    face_side: int
    person_box: tuple[int, int]  # width, height
    overrides: dict[str, dict] = field(default_factory=dict)
    casia_identities: int = CASIA_IDENTITIES
    market_ids: tuple[int, int] = (MARKET_TRAIN_IDS, MARKET_TEST_IDS)  # training, test identities
    verification_pairs: int = 20
    phi_recognizers: bool = False  # phi: a random recognizer in the recognizer YAML's architecture, not ``encoder``


PAPER = Scale(
    dit=DIT_XL_2,
    vae=SD_VAE,
    resnet={},  # ResNetConfig's defaults are ResNet-50
    encoder={"image_size": 112, "widths": [32, 64, 128], "embedding_size": 128},
    iresnet=None,  # the YAML's iresnet-50 itself
    face_side=112,  # insightface's aligned faces
    person_box=(64, 128),  # Market-1501's boxes
)
TINY = Scale(
    dit={**DIT_XL_2, "num_attention_heads": 2, "attention_head_dim": 8, "num_layers": 2},
    vae={**SD_VAE, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4},
    resnet={"embedding_size": 8, "hidden_sizes": [16, 32], "depths": [1, 1]},
    encoder={"image_size": 16, "widths": [4, 8], "embedding_size": 8},
    iresnet={"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 16], "embedding_size": 16},
    face_side=16,
    person_box=(8, 16),
    overrides={
        "sft": {"batch_size": 4, "resolution": 32},
        "recognizer": {
            "resolution": {"casia_webface": [32], **{name: [32, 16] for name in REID_BENCHMARKS}},
            "model": {"casia_webface": "iresnet_tiny", **{name: RESNET_ID for name in REID_BENCHMARKS}},
        },
    },
)
# The paper's recipes on a CPU at true model sizes, little work (true_size.py): the models of PAPER, phi included.
FULL = dataclasses.replace(
    PAPER,
    encoder=None,
    overrides=true_size.FULL_OVERRIDES,
    casia_identities=true_size.FULL_IDENTITIES,
    market_ids=(true_size.FULL_IDENTITIES, 2),
    verification_pairs=true_size.VERIFICATION_PAIRS,
    phi_recognizers=True,
)


def overrides(benchmark: str, stage: str, scale: Scale, steps: int) -> dict:
    """The sizes and steps a smoke run changes; a value given per benchmark is picked for ``benchmark``."""
    shots = {"shots": 2} if benchmark == "casia_webface" else {}  # the fixture holds 2 images per identity
    common = {
        "sft": {**shots, "max_steps": steps, "checkpoint_every": steps, "num_inference_steps": 2},
        "ddpo": {**shots, "num_epochs": steps, "identities_per_epoch": 4, "sample_num_steps": 4, "save_freq": steps},
        "generate": {"samples_per_identity": 2, "num_inference_steps": 2},
        "recognizer": {**shots, "max_steps": steps, "round_every": 1, "logging_steps": 1},
    }[stage]
    values = {**common, **scale.overrides.get(stage, {})}
    picked = {
        key: value.get(benchmark, common.get(key)) if isinstance(value, dict) else value
        for key, value in values.items()
    }
    return {key: value for key, value in picked.items() if value is not None}


# -- fixture trees in the releases' layouts ----------------------------------------------------------------------
def save_image(path: Path, size: tuple[int, int], rng: np.random.Generator) -> None:
    """A random JPEG of ``size`` (width, height): a per-image colour plus noise, so features differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, 3) + rng.normal(0, 20, (size[1], size[0], 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_casia(root: Path, identities: int, images_per_identity: int, side: int, rng: np.random.Generator) -> None:
    """CASIA-WebFace as unpacked image folders: ``0000045/001.jpg``, seven-digit identity folders."""
    for identity in range(identities):
        for number in range(1, images_per_identity + 1):
            save_image(root / f"{100 + identity:07d}" / f"{number:03d}.jpg", (side, side), rng)


def write_verification_bins(folder: Path, side: int, rng: np.random.Generator, pairs: int = 20) -> None:
    """insightface ``<set>.bin`` files: a pickle of (encoded images, 2 per pair, and the issame list)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in VERIFICATION_SETS:
        images = []
        for _ in range(2 * pairs):
            buffer = io.BytesIO()
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="JPEG")
            images.append(buffer.getvalue())
        issame = [index % 2 == 0 for index in range(pairs)]
        (folder / f"{name}.bin").write_bytes(pickle.dumps((images, issame), protocol=2))


def write_cuhk03(root: Path, size: tuple[int, int], rng: np.random.Generator) -> None:
    """cuhk03-np: ``detected/`` and ``labeled/``, each split like Market-1501, boxes named ``PPPP_cC_N.png``."""
    for config in ("detected", "labeled"):
        folder = root / config
        for person in range(1, MARKET_TRAIN_IDS + 1):
            for number in range(1, 5):
                save_image(folder / "bounding_box_train" / f"{person:04d}_c{1 + number % 2}_{number}.png", size, rng)
        for person in range(MARKET_TRAIN_IDS + 1, MARKET_TRAIN_IDS + MARKET_TEST_IDS + 1):
            save_image(folder / "query" / f"{person:04d}_c1_1.png", size, rng)
            for number in (2, 3):
                save_image(folder / "bounding_box_test" / f"{person:04d}_c2_{number}.png", size, rng)


def write_market(
    root: Path,
    size: tuple[int, int],
    rng: np.random.Generator,
    ids: tuple[int, int] = (MARKET_TRAIN_IDS, MARKET_TEST_IDS),
) -> None:
    """Market-1501-v15.09.15: ``PPPP_cCsS_FFFFFF_NN.jpg`` boxes in the three split folders for ``ids`` (training,
    test) identities; the gallery also holds a junk (-1) and a distractor (0000) box, as the release does."""
    train_ids, test_ids = ids
    for person in range(1, train_ids + 1):
        for camera in range(1, 5):
            save_image(root / "bounding_box_train" / f"{person:04d}_c{camera}s1_{camera * 1000:06d}_01.jpg", size, rng)
    for person in range(train_ids + 1, train_ids + test_ids + 1):
        save_image(root / "query" / f"{person:04d}_c1s1_000100_00.jpg", size, rng)
        for camera in (2, 3):
            save_image(root / "bounding_box_test" / f"{person:04d}_c{camera}s2_{camera * 100:06d}_01.jpg", size, rng)
    save_image(root / "bounding_box_test" / "-1_c1s1_000401_03.jpg", size, rng)
    save_image(root / "bounding_box_test" / "0000_c3s1_000151_01.jpg", size, rng)


# -- model stand-ins ---------------------------------------------------------------------------------------------
def serve_from_cache(folder: Path, repo_id: str, cache: Path, revision: str = "0" * 40) -> None:
    """Lay ``folder`` out as a cached Hub snapshot so ``from_pretrained(repo_id)`` finds it offline."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "snapshots").mkdir(parents=True, exist_ok=True)
    os.replace(folder, root / "snapshots" / revision)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)


def link_cached(repo_id: str, cache: Path) -> bool:
    """Use the real weights when your own Hub cache has them: link its repo folder into the smoke cache."""
    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (any of several huggingface_hub errors)
        return False
    (cache / snapshot.parents[1].name).symlink_to(snapshot.parents[1])
    return True


def write_dit(folder: Path, scale: Scale) -> None:
    """A random DiT + VAE + DDIM scheduler in the diffusers layout of facebook/DiT-XL-2-256."""
    torch.manual_seed(0)
    DiTTransformer2DModel(**scale.dit).save_pretrained(folder / "transformer")
    AutoencoderKL(**scale.vae).save_pretrained(folder / "vae")
    DDIMScheduler(**DIT_SCHEDULER).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "DiTPipeline",
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "id2label": {str(i): f"imagenet class {i}" for i in range(scale.dit["num_embeds_ada_norm"])},
    }
    (folder / "model_index.json").write_text(json.dumps(index))


def prepare(workdir: Path, scale: Scale, random_init: bool, benchmarks: list[str]) -> None:
    """Fixture data at the YAMLs' data paths, model stand-ins in ``workdir/hf_cache`` (``random_init``: even where
    your cache holds the real weights), phi at each DDPO YAML's ``encoder`` path."""
    rng = np.random.default_rng(0)
    cache = workdir / "hf_cache"
    cache.mkdir(parents=True, exist_ok=True)
    if random_init or not link_cached(DIT_ID, cache):
        write_dit(workdir / "dit", scale)
        serve_from_cache(workdir / "dit", DIT_ID, cache)
    if random_init or not link_cached(RESNET_ID, cache):
        ResNetForImageClassification(ResNetConfig(**scale.resnet)).save_pretrained(workdir / "resnet")
        serve_from_cache(workdir / "resnet", RESNET_ID, cache)
    if scale.iresnet is not None:
        IResNetConfig(**scale.iresnet).save_pretrained(workdir / "iresnet_tiny")
    for benchmark in benchmarks:
        config = recipe_config(benchmark, "recognizer")
        if benchmark == "casia_webface":
            write_casia(workdir / config["data_dir"], scale.casia_identities, 2, scale.face_side, rng)
            folder = workdir / config["verification_data_dir"]
            write_verification_bins(folder, scale.face_side, rng, scale.verification_pairs)
        elif benchmark == "market1501":
            write_market(workdir / config["data_dir"], scale.person_box, rng, scale.market_ids)
        elif not (workdir / config["data_dir"]).exists():  # the two CUHK03-NP benchmarks share one copy
            write_cuhk03(workdir / config["data_dir"], scale.person_box, rng)
        phi = workdir / recipe_config(benchmark, "ddpo")["encoder"]
        if scale.phi_recognizers:
            with smoke_environment(workdir):  # a ReID phi builds on the cached resnet-50
                true_size.write_phi(phi, config)
        else:
            IdentityEncoder(IdentityEncoderConfig(num_channels=3, **scale.encoder)).eval().save_pretrained(phi)


# -- running the recipes -----------------------------------------------------------------------------------------
def recipe_config(benchmark: str, stage: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / benchmark / f"{stage}.yaml").read_text())


def command_line(values: dict) -> list[str]:
    """``--key value ...`` as the recipes' TrlParser reads it (lists as several values)."""
    argv = []
    for key, value in values.items():
        argv += [f"--{key}", *map(str, value if isinstance(value, list) else [value])]
    return argv


def fresh_launch() -> None:
    """Forget accelerate's process state, as a new ``accelerate launch`` starts without one.

    Only this smoke test needs it: it runs several launches in one process, and the YAMLs' stages differ in
    precision (``sft.yaml`` auto, which is bf16 on a GPU; ``ddpo.yaml`` "no"), which one shared ``AcceleratorState``
    refuses. The recipes and the main job run one precision per process and never reset it.
    """
    AcceleratorState._reset_state(reset_partial_state=True)


@contextlib.contextmanager
def smoke_environment(workdir: Path) -> Iterator[None]:
    """Run in ``workdir`` (the YAMLs' relative paths land there) with the Hub and datasets caches inside it; leave
    the process as it was, accelerate's state included (none: the last stage's launch is forgotten)."""
    saved = (Path.cwd(), huggingface_hub.constants.HF_HUB_CACHE, datasets.config.HF_DATASETS_CACHE, sys.argv)
    os.chdir(workdir)
    huggingface_hub.constants.HF_HUB_CACHE = str(workdir / "hf_cache")
    datasets.config.HF_DATASETS_CACHE = workdir / "datasets_cache"
    try:
        yield
    finally:
        os.chdir(saved[0])
        huggingface_hub.constants.HF_HUB_CACHE, datasets.config.HF_DATASETS_CACHE, sys.argv = saved[1:]
        fresh_launch()


def samples_per_second(stage: str, values: dict, seconds_per_step: float | None, wall: float) -> float | None:
    """Training stages: batch images per optimizer step; DDPO: sampled images per second of the sampling phase
    (from its metrics log); generation: samples per second of the whole stage, scoring and audit included."""
    if stage == "ddpo":
        log = [json.loads(line) for line in (Path(values["output_dir"]) / "logs" / "metrics.jsonl").open()]
        sampling = [record["time/sample_s"] for record in log if "time/sample_s" in record]
        return values["identities_per_epoch"] * values["samples_per_identity"] / statistics.median(sampling)
    if stage == "generate":
        return len(datasets.load_from_disk(str(Path(values["output_dir"]) / "dataset"))) / wall
    if stage == "sft":
        batch = values["batch_size"]
    else:  # the recognizer YAMLs give the global batch; one process runs here
        batch = values.get("global_batch_size") or values["per_device_train_batch_size"]
    return batch / seconds_per_step if seconds_per_step else None


def run_stage(
    benchmark: str, stage: str, scale: Scale, steps: int, extra: dict | None = None, probe: bool = False
) -> dict:
    """Run one recipe script on its YAML plus the smoke overrides (and ``extra``); time its optimizer steps, and with
    ``probe`` count the FLOPs and time the model calls it makes (flop_probes.py)."""
    changed = {**overrides(benchmark, stage, scale, steps), **(extra or {})}
    script = REPO / "recipes" / RECIPES[stage]
    sys.argv = [str(script), "--config", str(REPO / "recipes" / benchmark / f"{stage}.yaml"), *command_line(changed)]
    fresh_launch()  # each stage sets up accelerate at its YAML's precision, as a separate launch does
    stamps: list[float] = []

    def record_step(*_) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    hook = register_optimizer_step_post_hook(record_step)
    gc.collect()  # the previous stage's models, so that the peak is this stage's own
    true_size.reset_peak_memory()
    started = time.perf_counter()
    with StageProbe() if probe else contextlib.nullcontext() as probed:
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exited:  # the scripts end with sys.exit(status), as a launch does
            if exited.code not in (0, None):
                raise RuntimeError(f"{script.name} exited with status {exited.code}") from exited
        finally:
            hook.remove()
    wall = time.perf_counter() - started
    intervals = np.diff(stamps)
    seconds_per_step = float(np.median(intervals)) if len(intervals) else None
    values = {**recipe_config(benchmark, stage), **changed}
    row = {
        "benchmark": benchmark,
        "stage": stage,
        "wall_s": wall,
        "optimizer_steps": len(stamps),
        "s_per_step": seconds_per_step,
        "samples_per_s": samples_per_second(stage, values, seconds_per_step, wall),
        "peak_memory_gb": true_size.peak_memory_gib(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine slows the timings
    }
    if probed is not None:
        row.update(values=values, probe=probed.summary())
    return row


def print_table(rows: list[dict]) -> None:
    memory = "peak CUDA GiB" if torch.cuda.is_available() else "peak RSS GiB"

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    print(f"\n| benchmark | stage | wall s | optimizer steps | s/step | samples/s | {memory} |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        name = row["benchmark"] + (f" ({row['precision']})" if row.get("precision") else "")
        if "error" in row:
            print(f"| {name} | {row['stage']} | FAILED: {row['error']} | | | | |")
            continue
        cells = [
            number(row["wall_s"], 1),
            str(row["optimizer_steps"]),
            number(row["s_per_step"], 3),
            number(row["samples_per_s"], 2),
            number(row["peak_memory_gb"], 2),
        ]
        print(f"| {name} | {row['stage']} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="Tiny stand-ins of the same families (CPU).")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="The paper's two recipes with true-size models and little work (CPU): step times under fp32 and bf16, "
        "FLOPs and H100 projections of the full schedules (true_size.py).",
    )
    parser.add_argument("--precisions", nargs="+", choices=true_size.PRECISIONS, default=list(true_size.PRECISIONS))
    parser.add_argument("--threads", type=int, help="Torch threads (default: torch's own choice).")
    parser.add_argument("--steps", type=int, default=2, help="Steps (cold start, recognizer) or DDPO epochs.")
    parser.add_argument("--benchmarks", nargs="+", choices=BENCHMARKS)
    parser.add_argument("--output-dir", type=Path, help="An empty working folder (default: a temporary one, removed).")
    parser.add_argument("--stage-process", type=Path, help=argparse.SUPPRESS)  # true_size.run_in_own_process
    args = parser.parse_args(argv)
    if args.stage_process:  # one --full-size stage, in a process of its own
        spec = json.loads(args.stage_process.read_text())
        setup_runtime(threads=spec["threads"])
        with smoke_environment(Path(spec["folder"])):
            row = run_stage(spec["benchmark"], spec["stage"], FULL, spec["steps"], spec["extra"], probe=True)
        true_size.stage_result(args.stage_process).write_text(json.dumps(row, default=str))
        return 0
    if args.output_dir and args.output_dir.exists() and any(args.output_dir.iterdir()):
        parser.error(f"--output-dir {args.output_dir} is not empty: the stages would resume or mix earlier runs.")
    benchmarks = args.benchmarks or list(true_size.PAPER_RECIPES if args.full_size else BENCHMARKS)
    if args.full_size and (args.tiny or set(benchmarks) - set(true_size.PAPER_RECIPES)):
        parser.error(f"--full-size runs {true_size.PAPER_RECIPES} at true size, without --tiny.")
    setup_runtime(threads=args.threads)  # each recipe then sets up its own stage (seed, precision) as its launch would
    scale = TINY if args.tiny else FULL if args.full_size else PAPER
    with contextlib.ExitStack() as stack:
        workdir = args.output_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_smoke_")))
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        prepare(workdir, scale, args.tiny or args.full_size, benchmarks)
        print(f"Fixtures and stand-ins ready in {time.perf_counter() - started:.1f} s under {workdir}")
        true_size.reset_peak_memory()  # hand back what building the stand-ins took, for the stages' processes
        runs: list[tuple[Path, str | None]] = [(workdir, None)]
        if args.full_size:  # one run folder per precision, sharing the fixtures, the model cache and phi
            shared = ["hf_cache"]
            for benchmark in benchmarks:
                config = recipe_config(benchmark, "recognizer")
                shared += [config["data_dir"], recipe_config(benchmark, "ddpo")["encoder"]]
                shared += [config["verification_data_dir"]] if "verification_data_dir" in config else []
            runs = [(true_size.precision_workdir(workdir, p, shared), p) for p in args.precisions]
        rows = []
        for folder, precision in runs:
            with smoke_environment(folder):
                for benchmark in benchmarks:
                    for stage in RECIPES:
                        extra = true_size.precision_overrides(stage, precision) if precision else {}
                        try:
                            if args.full_size:  # each stage's peak memory its own, as in its own launch
                                spec = {"benchmark": benchmark, "stage": stage, "steps": args.steps, "extra": extra}
                                spec.update(folder=str(folder), threads=args.threads)
                                row = true_size.run_in_own_process(Path(__file__), spec)
                            else:
                                row = run_stage(benchmark, stage, scale, args.steps, extra)
                        except Exception as error:  # report, skip the stages that need this one, go on
                            traceback.print_exc()
                            row = {"benchmark": benchmark, "stage": stage, "error": f"{type(error).__name__}"}
                        rows.append({**row, "precision": precision} if precision else row)
                        if "error" in row:
                            break
        (workdir / "gpu_smoke.json").write_text(json.dumps(rows, indent=2, default=str))
        print_table(rows)
        if args.full_size:
            print("\n" + true_size.write_report(rows, REPO / "recipes", workdir / "true_size.json"))
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
