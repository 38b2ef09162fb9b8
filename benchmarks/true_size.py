"""``gpu_smoke.py --full-size``: the paper's two recipes with their models at TRUE size on a CPU, and what the full
schedules would cost on one H100.

What runs. Every stage of ``recipes/casia_webface`` (faces at 128 px) and ``recipes/market1501`` (persons at 256 px,
recognizer at 256x128) through ``gpu_smoke.run_stage``, i.e. the recipe scripts on their YAMLs, with the models at
their published sizes and random weights: DiT-XL/2 + the Stable Diffusion VAE built from the configs the package
ships (:mod:`rlsyn_trl.generators.paper_configs`) with per-block identity embedders (the cold start's own
``prepare_identity_generator``); phi and the recognizers in the architectures the recognizer YAMLs name (IResNet-50
for faces, the BoT ResNet-50 with BNNeck and last stride 1 for ReID). Only the amount of work shrinks
(:data:`FULL_OVERRIDES`): 2 identities in the fixtures (the cold start samples a grid of every identity, 1,000 of
them in the CASIA config), 2 cold-start steps of 2 images, one DDPO epoch of one identity group (4 samples, 2 DDIM
steps, 2 optimizer steps), 2 samples of one identity generated and audited, 2 recognizer steps of 8 images and one
selection round. Each recipe runs once per precision (``--mixed_precision no`` and ``bf16`` in the cold start and
DDPO, ``--bf16`` in the recognizer; generation has no precision setting and samples in float32 in both runs), each
run in its own folder that shares the fixtures and the model cache.

What is measured, per stage, each stage in a process of its own as its launch is (:func:`run_in_own_process`: the
runtime keeps freed memory for reuse, so in one shared process a stage would start from the peak of the stages
before it): peak RSS (the kernel's high-water mark, reset before the stage; it counts the pages of the
memory-mapped weight files too), the median optimizer step after the first, the median sampler step, and FLOPs
counted in-process around the real model calls (:mod:`flop_probes`): one optimizer step's forward + backward, one
DiT forward per latent row, the VAE, phi, one selection round.

The projection. Each stage's FULL schedule (the YAMLs' step counts, batch sizes, sampler steps and the real data
sizes: CASIA-WebFace's 1,000-identity subset at 20 shots, Market-1501's 751 identities and 12,936 boxes) is priced
with the measured FLOPs per row, scaled linearly in rows (exact for matrix products and convolutions), and divided
by an H100 SXM's dense peak at :data:`UTILISATION`: 989 TFLOP/s in bf16, 495 in TF32 for the stages whose YAML runs
float32 (DDPO, generation, recognizers; TF32 is on for CUDA matmuls). It is a PROJECTION: a utilisation assumed,
not measured; only matrix products, convolutions and attention counted (elementwise work, data loading, the
audit's distance products, evaluation, checkpoints left out); one process (a DDP launch splits the same FLOPs).
DDPO's policy-gradient rows and its denoising anchor's rows cost the same per DiT row (one forward and backward at
the same latent shape with the same trainable weights), which is how one measured optimizer step prices both.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch
from trl import TrlParser

from rlsyn_trl.data.casia_webface import CasiaWebFace
from rlsyn_trl.generation import GenerationConfig
from rlsyn_trl.generators.sampling import uses_guidance
from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments
from rlsyn_trl.recognizer import RecognizerConfig, build_recognizer
from rlsyn_trl.recognizer.pretrained import RecognizerModel
from rlsyn_trl.trainers import ColdStartConfig, RLSynDDPOConfig
from rlsyn_trl.utils.runtime import cpu_flags

PAPER_RECIPES = ("casia_webface", "market1501")
PRECISIONS = ("no", "bf16")
H100_DENSE_TFLOPS = {"bf16": 989.4, "tf32": 494.7}  # H100 SXM5 tensor cores, dense (NVIDIA's datasheet)
UTILISATION = 0.40
FULL_IDENTITIES = 2  # fixture identities; see the module docstring
VERIFICATION_PAIRS = 10  # per insightface .bin: one pair per fold of the 10-fold protocol
MARKET_TRAIN = (751, 12936)  # Market-1501's training identities and boxes (rlsyn_trl.data.market1501)
FIRST_IDENTITY = {"casia_webface": "0000100", "market1501": "0001"}  # the fixtures' first label names

# After gpu_smoke's common overrides; a dict value is per recipe. dataset_config "default": the fixture's identities
# (the CASIA YAML's subset_1k would draw 1,000 of them).
FULL_OVERRIDES = {
    "sft": {"dataset_config": "default", "batch_size": 2},
    "ddpo": {
        "dataset_config": "default",
        "num_epochs": 1,
        "save_freq": 1,
        "identities_per_epoch": 1,
        "sample_num_steps": 2,
        "sample_batch_size": 4,
        "train_batch_size": 2,  # 2 optimizer steps: the first counted, the second timed
        "denoise_batch_size": 2,
        "grid_identities": 1,
    },
    "generate": {
        "dataset_config": "default",
        "identities": {k: [v] for k, v in FIRST_IDENTITY.items()},
        "batch_size": 2,
    },
    "recognizer": {
        "dataset_config": "default",
        "global_batch_size": 8,
        "identities_per_batch": {"market1501": 2},  # P x K = 2 x 4
        "round_every": 2,  # one selection round, after the last (timed) step
        "candidates_per_round": 2,
        "real_per_round": 4,
    },
}
STAGE_CONFIGS = {
    "sft": (ColdStartConfig,),
    "ddpo": (RLSynDDPOConfig,),
    "generate": (GenerationConfig,),
    "recognizer": (RecognizerScriptArguments, RecognizerConfig),
}


def precision_overrides(stage: str, precision: str) -> dict:
    """The stage's own precision switch; generation has none (it samples in float32). ``TrainingArguments`` refuses
    bf16 without a GPU unless told the run is a CPU one (``use_cpu``)."""
    if stage in ("sft", "ddpo"):
        return {"mixed_precision": precision}
    if stage == "recognizer":
        return {"bf16": precision == "bf16", **({} if torch.cuda.is_available() else {"use_cpu": True})}
    return {}


# -- memory and set-up ---------------------------------------------------------------------------------------------
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def reset_peak_memory() -> None:
    """Start a stage's peak afresh: CUDA's allocator statistics, or on Linux the heap handed back (``malloc_trim``;
    the runtime keeps freed memory) and the kernel's RSS high-water mark reset (``clear_refs`` 5)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_gib() -> float:
    """CUDA's peak allocation, else the RSS high-water mark since :func:`reset_peak_memory` (the process's peak
    where ``/proc`` is missing)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_phi(folder: Path, recognizer_yaml: dict, identities: int = 64) -> None:
    """A random phi in the recognizer YAML's architecture (a ``train_recognizer`` folder, as the DDPO YAML's
    ``encoder`` may be), trained on other ("public") identities than the targets'."""
    keys = ("model", "reid_neck", "last_stride", "loss", "cosface_scale", "cosface_margin", "resolution", "channels")
    architecture = {key: recognizer_yaml[key] for key in keys if key in recognizer_yaml}
    config = RecognizerConfig(output_dir=str(folder), from_scratch=True, **architecture)
    names = [f"public_{index:03d}" for index in range(identities)]
    recognizer = build_recognizer(config, names)
    calibrate_batch_norms(recognizer, (config.channels, *config.resolution))
    RecognizerModel.wrap(recognizer.eval(), config, names).save_pretrained(folder)


@torch.no_grad()
def calibrate_batch_norms(model: torch.nn.Module, image_shape: tuple[int, ...], images: int = 8) -> None:
    """Give a random network the BatchNorm statistics of its own activations (one pass over random images in
    ``[-1, 1]``), as a trained one has: with the initial statistics (mean 0, variance 1) a random IResNet-50's
    activations grow through its 24 residual blocks to about 1e26 in eval mode, and phi's features overflow."""
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one pass sets the statistics
    model.train()(torch.rand(images, *image_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


def stage_result(spec: Path) -> Path:
    """Where a stage's process writes its row, beside its spec."""
    return spec.with_suffix(".row.json")


def run_in_own_process(script: Path, spec: dict) -> dict:
    """Run one stage (``spec``: benchmark, stage, steps, extra overrides, run folder, threads) through ``script``'s
    hidden ``--stage-process`` in a fresh Python process, and return its row."""
    path = Path(spec["folder"]) / f"stage_{spec['benchmark']}_{spec['stage']}.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, str(script), "--stage-process", str(path)], check=False)
    if done.returncode != 0 or not stage_result(path).exists():
        raise RuntimeError(f"{spec['benchmark']}/{spec['stage']}: its process exited with status {done.returncode}")
    return json.loads(stage_result(path).read_text())


def precision_workdir(root: Path, precision: str, shared: list[str]) -> Path:
    """``root/mixed_precision_<p>``: a run folder whose ``shared`` paths (fixtures, model cache, phi) link to root's."""
    folder = root / f"mixed_precision_{precision}"
    for relative in shared:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).symlink_to(root / relative, target_is_directory=True)
    return folder


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown",
    )
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"})
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "flags": flags,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


# -- the projection ------------------------------------------------------------------------------------------------
def parse_recipe(path: Path, stage: str):
    """A recipe YAML read the way its script reads it (defaults of the config classes included)."""
    parsed = TrlParser(STAGE_CONFIGS[stage]).parse_args_and_config(["--config", str(path)])
    return parsed[-1]


def full_data(benchmark: str, sft: ColdStartConfig) -> tuple[int, int]:
    """Identities and real training images of the recipe's real data."""
    if benchmark == "casia_webface":
        subset = {config.name: config for config in CasiaWebFace.BUILDER_CONFIGS}[sft.dataset_config]
        return subset.num_identities, subset.num_identities * sft.shots
    return MARKET_TRAIN


def _row(probe: dict, unit: str) -> float:
    value = probe["units"].get(unit, {}).get("flops_per_row")
    if value is None:
        raise KeyError(f"The stage ran no {unit} call, which its projection needs.")
    return value


def _guided(scale: float) -> int:
    return 2 if uses_guidance(scale) else 1


def project(stage: str, c, probe: dict, identities: int, real_images: int) -> tuple[str, dict[str, float]]:
    """(the full schedule in words, its FLOPs by term) for one stage's parsed YAML ``c``."""
    step = probe["train_step"]
    if stage == "sft":
        grid = identities * c.grid_per_identity
        sampler = c.num_inference_steps * _guided(c.guidance_scale) * _row(probe, "dit_forward")
        words = f"{c.max_steps} steps x {c.batch_size} images; grid {grid} x {c.num_inference_steps} steps"
        terms = {
            "training": c.max_steps * c.batch_size * step["flops"] / step["rows"],
            "sample grid": grid * (sampler + _row(probe, "vae_decode")),
        }
        return words, terms
    if stage == "ddpo":
        n = (c.identities_per_epoch or identities) * c.samples_per_identity
        train_cfg = 2 if c.train_cfg else 1
        encode = probe["units"].get("vae_encode", {}).get("flops_per_row") or 0.0
        encoded = step["unit_rows"].get("vae_encode", 0)
        per_grad_row = (step["flops"] - encoded * encode) / step["unit_rows"]["dit_forward_grad"]
        optimizer_steps = n * c.train_num_inner_epochs / (c.train_batch_size * c.train_gradient_accumulation_steps)
        anchor = optimizer_steps * c.denoise_batch_size if c.denoise_coef > 0 else 0
        policy = n * c.trained_timesteps() * c.train_num_inner_epochs * train_cfg
        dit, epochs, steps = _row(probe, "dit_forward"), c.num_epochs, c.sample_num_steps
        words = f"{epochs} epochs x {n} samples x {steps} steps ({c.trained_timesteps()} trained)"
        terms = {
            "sampling": epochs * n * steps * _guided(c.sample_guidance_scale) * dit,
            "KL reference": epochs * n * steps * train_cfg * dit if c.kl_coef > 0 else 0.0,
            "decode + reward": epochs * n * (_row(probe, "vae_decode") + _row(probe, "phi")),
            "policy + anchor training": epochs * ((policy + anchor) * per_grad_row + anchor * encode),
            "memory bank": real_images * _row(probe, "phi"),
        }
        return words, terms
    if stage == "generate":
        n = identities * c.samples_per_identity
        sampler = c.num_inference_steps * _guided(c.guidance_scale) * _row(probe, "dit_forward")
        words = f"{identities} x {c.samples_per_identity} samples x {c.num_inference_steps} steps"
        terms = {
            "sampling": n * sampler,
            "decode": n * _row(probe, "vae_decode"),
            "phi (samples and real images)": (n + real_images) * _row(probe, "phi"),
        }
        return words, terms
    batch = c.global_batch_size or c.per_device_train_batch_size
    words = f"{c.max_steps} steps x {batch} images"
    terms = {"training": c.max_steps * batch * step["flops"] / step["rows"]}
    if c.selection:
        rounds = c.max_steps // c.round_every
        words += f"; {rounds} selection rounds x {c.real_per_round + c.candidates_per_round} images"
        terms["selection rounds"] = (
            rounds * (c.real_per_round + c.candidates_per_round) * _row(probe, "selection_round")
        )
    return words, terms


def yaml_precision(stage: str, c) -> str:
    """What the stage computes in on an H100 as its YAML stands: bf16 (``auto`` or bf16) or TF32 (float32)."""
    if stage in ("sft", "ddpo"):
        return "bf16" if c.mixed_precision in ("auto", "bf16") else "tf32"
    return "bf16" if stage == "recognizer" and c.bf16 else "tf32"


def projections(rows: list[dict], recipes: Path) -> list[dict]:
    """One projection per recipe and stage, from the FLOPs its first measured run counted."""
    result = []
    for benchmark in dict.fromkeys(row["benchmark"] for row in rows):
        configs = {stage: parse_recipe(recipes / benchmark / f"{stage}.yaml", stage) for stage in STAGE_CONFIGS}
        identities, real_images = full_data(benchmark, configs["sft"])
        for stage, config in configs.items():
            precision = yaml_precision(stage, config)
            wanted = "bf16" if precision == "bf16" else "no"  # DDPO's bf16 run samples with LoRA unmerged: +1%
            measured = [r for r in rows if (r["benchmark"], r["stage"]) == (benchmark, stage) and "probe" in r]
            if not measured:
                continue
            run = min(measured, key=lambda r: r["precision"] != wanted)
            words, terms = project(stage, config, run["probe"], identities, real_images)
            total = sum(terms.values())
            hours = {name: total / (UTILISATION * peak * 1e12) / 3600 for name, peak in H100_DENSE_TFLOPS.items()}
            result.append({
                "benchmark": benchmark, "stage": stage, "schedule": words, "flops": total, "terms": terms,
                "counted_in": run["precision"], "yaml_precision": precision, "h100_hours_bf16": hours["bf16"],
                "h100_hours_yaml": hours[precision],
            })  # fmt: skip
    return result


# -- the report ----------------------------------------------------------------------------------------------------
def step_measures(row: dict) -> list[tuple[str, float | None, float | None]]:
    """(step in words, FLOPs, seconds) of a stage's optimizer step and sampler step, where it has them."""
    probe, values, measures = row["probe"], row["values"], []
    dit = probe["units"].get("dit_forward", {})
    batch = {"ddpo": values.get("sample_batch_size"), "generate": values.get("batch_size")}.get(row["stage"])
    if batch and dit.get("flops_per_row"):
        rows = batch * _guided(values.get("sample_guidance_scale", values.get("guidance_scale", 1.0)))
        seconds = dit["s_per_row"] * rows if dit["s_per_row"] else None
        measures.append((f"sampler step, {rows} latent rows {dit['row_shape']}", dit["flops_per_row"] * rows, seconds))
    step = probe["train_step"]
    if step is not None:
        grad = step["unit_rows"].get("dit_forward_grad")
        what = f"{step['rows']} images" if row["stage"] != "ddpo" else f"{grad} DiT rows fwd+bwd"
        measures.append((f"optimizer step, {what}", step["flops"], row["s_per_step"]))
    return measures


def tables(rows: list[dict], projected: list[dict]) -> str:
    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    runs = {(r["benchmark"], r["stage"], r["precision"]): r for r in rows if "error" not in r}
    lines = [
        "| recipe | stage | step (run's shape) | GFLOP/step | fp32 s/step | bf16 s/step | peak RSS GiB fp32 / bf16 | "
        "stage wall s fp32 / bf16 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for benchmark, stage in dict.fromkeys((r["benchmark"], r["stage"]) for r in rows):
        fp32, bf16 = runs.get((benchmark, stage, "no")), runs.get((benchmark, stage, "bf16"))
        reference = fp32 or bf16
        if reference is None:
            lines.append(f"| {benchmark} | {stage} | FAILED | | | | | |")
            continue
        other = {name: (flops, seconds) for name, flops, seconds in (step_measures(bf16) if bf16 else [])}
        memory = " / ".join(cell(r["peak_memory_gb"] if r else None, 1) for r in (fp32, bf16))
        wall = " / ".join(cell(r["wall_s"] if r else None, 0) for r in (fp32, bf16))
        for name, flops, seconds in step_measures(reference):
            bf16_flops, bf16_seconds = other.get(name, (None, None))
            counted = cell(flops / 1e9, 0)
            if bf16_flops and abs(bf16_flops / flops - 1) > 0.005:
                counted += f" (bf16 run: {bf16_flops / 1e9:.0f})"
            cells = [counted, cell(seconds if fp32 else None, 2), cell(bf16_seconds, 2), memory, wall]
            lines.append(f"| {benchmark} | {stage} | {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| recipe | stage | full schedule (YAML) | PFLOP | H100 h, bf16 at {UTILISATION:.0%} | YAML precision | "
        f"H100 h at its peak x {UTILISATION:.0%} |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    for p in projected:
        cells = [p["schedule"], cell(p["flops"] / 1e15, 1), cell(p["h100_hours_bf16"], 2), p["yaml_precision"]]
        lines.append(
            f"| {p['benchmark']} | {p['stage']} | " + " | ".join(cells + [cell(p["h100_hours_yaml"], 2)]) + " |"
        )
    totals = {}
    for p in projected:
        totals.setdefault(p["benchmark"], [0.0, 0.0])
        totals[p["benchmark"]][0] += p["h100_hours_bf16"]
        totals[p["benchmark"]][1] += p["h100_hours_yaml"]
    for benchmark, (bf16_hours, yaml_hours) in totals.items():
        lines.append(f"| {benchmark} | all | | | {bf16_hours:.2f} | | {yaml_hours:.2f} |")
    return "\n".join(lines)


def write_report(rows: list[dict], recipes: Path, path: Path) -> str:
    """Write ``true_size.json`` (machine, assumptions, every stage run, the projections); return the tables."""
    projected = projections(rows, recipes)
    report = {
        "machine": machine(),
        "assumptions": {
            "h100_dense_tflops": H100_DENSE_TFLOPS,
            "utilisation": UTILISATION,
            "counted": "matrix products, convolutions, attention (torch.utils.flop_counter, CPU attention added)",
            "scaling": "FLOPs per row measured at the run's shapes, scaled linearly to the YAMLs' rows",
        },
        "runs": rows,
        "projections": projected,
    }
    path.write_text(json.dumps(report, indent=2, default=str))
    return tables(rows, projected)
