"""The main job: the whole chain on the embedded default, offline, in one command.

priors (shipped) -> cold start -> DDPO -> generation (cold-start and RL adapters) -> recognizer rows, then a
JSON + Markdown comparison, the reward curves and a sample grid. ``quick`` shrinks every stage for CI.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..data import dataset_to_tensors
from ..generation import GenerationConfig
from ..metrics.identity import nearest_neighbour_accuracy
from ..provenance import resolve_data_split
from ..recognizer import TINY_MODEL
from ..trainers import ColdStartConfig, RLSynDDPOConfig
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.launch import is_main_process
from ..utils.runtime import process_precision
from .comparison import (
    RowJob,
    add_paired_gains,
    recognizer_precision,
    recognizer_rows,
    results_table,
    train_rows,
)
from .config import MainJobConfig, embedded_recipe

logger = logging.getLogger(__name__)

STAGE_RECORD = "stages.json"
# The settings the generative stages depend on: stages=recognizers refuses a record written for others.
STAGE_SETTINGS = (
    "shots",
    "split_seed",
    "seed",
    "quick",
    "prior",
    "encoder",
    "samples_per_identity",
    "inference_steps",
    "guidance_scale",
    "guidance_interval",
    "ablation",
    "reference_strengths",
    "reference_ddpo",
    "paper_rows",
)


def reward_variants(ablation: bool) -> dict[str, list[float] | None]:
    """DDPO runs of the job, name -> reward weights (None: the recipe's). The ablation switches terms on in turn."""
    variants: dict[str, list[float] | None] = {"rl": None}
    if ablation:
        variants = {"rl_sem": [1.0, 0.0, 0.0], "rl_sem_cov": [1.0, 0.75, 0.0], **variants}
    return variants


def _tag(strength: float) -> str:
    return f"ref{strength:g}"


def ddpo_runs(config: MainJobConfig) -> dict[str, dict]:
    """DDPO runs of the job, name -> settings overrides: the paper's (reward weights) and the reference-guided ones."""
    runs = {}
    if config.paper_rows:
        variants = reward_variants(config.ablation).items()
        runs = {name: {} if weights is None else {"reward_weights": weights} for name, weights in variants}
    if config.reference_ddpo:
        runs.update({f"rl_{_tag(s)}": {"reference_strength": s} for s in config.reference_strengths})
    return runs


def generation_runs(config: MainJobConfig) -> dict[str, tuple[str, dict]]:
    """Synthetic sets of the job, name -> (adapter name, generation overrides)."""
    runs = {}
    if config.paper_rows:
        runs = {name: (name, {}) for name in reward_variants(config.ablation)}
        if config.ablation:  # the cold-start samples are the ablation's first row
            runs = {"cold_start": ("cold_start", {}), **runs}
    for strength in config.reference_strengths:
        runs[f"cold_start_{_tag(strength)}"] = ("cold_start", {"reference_strength": strength})
        if config.reference_ddpo:
            runs[f"rl_{_tag(strength)}"] = (f"rl_{_tag(strength)}", {"reference_strength": strength})
    return runs


def reference_rows(config: MainJobConfig) -> list[tuple[str, str | None, dict]]:
    """The reference-guided rows: cold-start samples as they are, DDPO samples with selection (the full method)."""
    rows = []
    for strength in config.reference_strengths:
        rows.append((f"+ reference-guided cold start s={strength:g}", f"cold_start_{_tag(strength)}", {}))
        if config.reference_ddpo:
            rows.append(
                (f"+ reference-guided DDPO s={strength:g} + selection", f"rl_{_tag(strength)}", {"selection": True})
            )
    return rows


def _job_recipe(stage: str, config: MainJobConfig, output_dir: Path, **updates) -> dict:
    """``recipes/orl_faces/<stage>.yaml`` with this job's seed, output folder and ``updates``."""
    return {**embedded_recipe(stage), "seed": config.seed, "output_dir": str(output_dir), **updates}


def _precision(config: MainJobConfig) -> dict:
    """The job's precision as a training stage's setting; empty for 'auto' (the recipe's own setting)."""
    return {} if config.mixed_precision == "auto" else {"mixed_precision": config.mixed_precision}


def cold_start_settings(config: MainJobConfig, output_dir: Path) -> dict:
    """``sft.yaml`` for this job's prior, split and (when quick) step count."""
    settings = _job_recipe(
        "sft",
        config,
        output_dir,
        base_model=config.prior,
        shots=config.shots,
        split_seed=config.split_seed,
        **_precision(config),
    )
    if config.quick:
        settings.update(max_steps=10, warmup_steps=1, num_inference_steps=4, grid_per_identity=2)
    return settings


def ddpo_settings(config: MainJobConfig, adapter: Path, output_dir: Path) -> dict:
    """``ddpo.yaml`` on top of this job's cold-start adapter."""
    settings = _job_recipe(
        "ddpo",
        config,
        output_dir,
        adapter=str(adapter),
        encoder=config.encoder,
        **_precision(config),
    )
    if config.quick:
        settings.update(num_epochs=1, sample_num_steps=4, train_timestep_fraction=0.5, max_minutes=None)
    return settings


def generation_settings(config: MainJobConfig, adapter: Path, output_dir: Path) -> dict:
    """``generate.yaml`` with this job's sample count and sampler.

    Both adapters sample with DDPO's training chain unless ``inference_steps`` is set: the RL policy is optimised
    on that chain (10 stochastic DDIM steps, half the cost of 20 deterministic ones; docs/results.md compares the
    two), and the cold-start row uses the same chain so that the rows differ only by the adapter. The guidance is
    the job's (generate.yaml's 1.0), not DDPO's 2.0: guidance 2 sharpens identity but draws fewer faces the detector
    finds, and the samples drawn at 1 train the better recognizer on every split measured (docs/results.md).
    """
    ddpo = embedded_recipe("ddpo")
    sampler = {"num_inference_steps": ddpo["sample_num_steps"], "eta": ddpo["sample_eta"]}
    if config.inference_steps is not None:
        sampler = {"num_inference_steps": config.inference_steps}
    return _job_recipe(
        "generate",
        config,
        output_dir,
        adapter=str(adapter),
        encoder=config.encoder,
        samples_per_identity=config.samples_per_identity,
        guidance_scale=config.guidance_scale,
        guidance_interval=config.guidance_interval,
        **sampler,
    )


def _stage_done(folder: Path, marker: str, reuse: bool) -> bool:
    """Whether a finished stage can be reused; otherwise its folder is cleared for a fresh run."""
    if reuse and (folder / marker).is_file():
        logger.info("Reusing %s", folder)
        return True
    if folder.exists() and is_main_process():
        shutil.rmtree(folder)
    # The other processes start the stage once the folder is cleared. Only a group the stages made is used here:
    # an accelerate state created before the first stage's Accelerator made every cold-start step 2x slower on CPU.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return False


def run_generative_stages(config: MainJobConfig, output: Path) -> dict:
    """Cold start, the DDPO runs and the synthetic datasets (reusing finished stages); the record the rows need.

    The main process writes the record to ``stages.json``: ``--stages recognizers`` (or the process that launched
    these stages as a data-parallel group) reads it back.
    """
    from ..recipes import ddpo as ddpo_recipe
    from ..recipes import generate as generate_recipe
    from ..recipes import sft as sft_recipe

    timings: dict[str, float] = {}
    budget_cuts: list[str] = []
    started = time.time()
    sft_dir = output / "sft"
    if not _stage_done(sft_dir, "provenance.json", config.reuse):
        logger.info("Stage: cold start -> %s", sft_dir)
        summary = sft_recipe.main(ColdStartConfig(**cold_start_settings(config, sft_dir)))
        if summary["stopped_by_time_budget"]:
            budget_cuts.append(f"cold start stopped at step {summary['steps']} of {summary['max_steps']}")
    timings["cold_start"] = time.time() - started

    adapters = {"cold_start": sft_dir}
    for name, overrides in ddpo_runs(config).items():
        folder = output / ("ddpo" if name == "rl" else f"ddpo_{name}")
        if not _stage_done(folder, "provenance.json", config.reuse):
            logger.info("Stage: DDPO (%s) -> %s", name, folder)
            settings = {**ddpo_settings(config, sft_dir, folder), **overrides}
            summary = ddpo_recipe.main(RLSynDDPOConfig(**settings))
            if summary["stopped_by_time_budget"]:
                epochs = f"{summary['epochs']} of {settings['num_epochs']}"
                budget_cuts.append(f"DDPO ({name}) stopped after {epochs} epochs")
        adapters[name] = folder
    timings["ddpo"] = time.time() - started - sum(timings.values())

    synthetic: dict[str, dict] = {}
    for name, (source, overrides) in generation_runs(config).items():
        logger.info("Stage: generation from %s %s", adapters[source], overrides or "")
        folder = output / f"synthetic_{name}"
        settings = {**generation_settings(config, adapters[source], folder), **overrides}
        _, summary = generate_recipe.main(GenerationConfig(**settings))
        synthetic[name] = {"dataset": str(folder / "dataset"), "summary": summary}
    timings["generation"] = time.time() - started - sum(timings.values())
    record = {"config": asdict(config), "timings_s": timings, "budget_cuts": budget_cuts, "synthetic": synthetic}
    if is_main_process():
        atomic_write_json(output / STAGE_RECORD, record)
    return record


def read_stage_record(config: MainJobConfig, output: Path) -> dict:
    """The generative stages' record in ``output``; refused when missing or written for other settings."""
    path = output / STAGE_RECORD
    if not path.is_file():
        raise FileNotFoundError(
            f"stages=recognizers needs the finished generative stages in {output}: no {STAGE_RECORD} there. Run the "
            "job with stages=all (or generation) first, with the same output_dir."
        )
    record = json.loads(path.read_text())
    written = {key: record["config"].get(key) for key in STAGE_SETTINGS}
    wanted = {key: getattr(config, key) for key in STAGE_SETTINGS}
    if written != wanted:
        raise ValueError(f"{path} was written for {written}, not {wanted}: run stages=all or generation again.")
    return record


def run_main_job(config: MainJobConfig) -> dict:
    """Run every stage through the recipes' entry points (reusing finished ones); write ``results.json`` / ``.md``.

    The caller sets the process up once (:func:`rlsyn_trl.utils.runtime.setup_runtime`): every stage then runs at the
    same precision, so they share one accelerate state in this process. ``config.stages`` runs a part: the
    generative stages only, or the recognizer rows on the generative stages a former run left in ``output_dir``.
    """
    from ..recipes.train_recognizer import RecognizerScriptArguments

    # One precision for the whole process: accelerate keeps one state per process and refuses a second precision,
    # so every stage, the recognizer rows included, runs at what setup_runtime resolved "auto" to.
    config = replace(config.scaled(), mixed_precision=process_precision(config.mixed_precision))
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if config.stages == "recognizers":
        stages = read_stage_record(config, output)
    else:
        stages = run_generative_stages(config, output)
        if config.stages == "generation":
            return stages
    started = time.time()
    synthetic = stages["synthetic"]
    split = RecognizerScriptArguments(
        dataset_name="orl_faces", dataset_config="private", shots=config.shots, split_seed=config.split_seed
    )
    real = resolve_data_split(split).load()
    train, train_labels = dataset_to_tensors(real["train"])
    test, test_labels = dataset_to_tensors(real["test"])
    rows = [
        {
            "method": "raw-pixel 1-NN",
            "accuracy": nearest_neighbour_accuracy(test, test_labels, train, train_labels, "euclidean"),
        },
    ]
    plan = recognizer_rows(config.ablation, config.paper_rows) + reference_rows(config)
    seeds = [config.seed + offset for offset in range(config.recognizer_seeds)]
    jobs = []
    for method, source, overrides in plan:
        folder = output / "recognizer" / method.split(" (")[0].replace(" ", "_").replace("+", "plus")
        overrides = {**overrides, **recognizer_precision(config.mixed_precision)}
        if source:
            overrides = {**overrides, "synthetic_dataset": synthetic[source]["dataset"]}
        for seed in seeds:  # one seed keeps the row's folder as it was; several get a folder each
            row_folder = folder if len(seeds) == 1 else folder / f"seed{seed}"
            jobs.append(
                RowJob(method, str(row_folder), config.recognizer_model, config.recognizer_steps, seed, overrides)
            )
    trained = iter(train_rows(split, jobs, config.recognizer_workers))
    for method, source, _ in plan:
        accuracies = [next(trained)["test_accuracy"] for _ in seeds]
        row = {"method": method, "accuracy": float(np.mean(accuracies)), "accuracies": accuracies, "seeds": seeds}
        if source:
            summary = synthetic[source]["summary"]
            row.update(
                identity_consistency=summary["identity_consistency"],
                face_detection_rate=summary["face_detection_rate"],
                memorization_rate=summary["audit"]["memorization"]["rate"],
                evaluator_consistency=(summary.get("evaluator") or {}).get("identity_consistency"),
            )
        rows.append(row)
    add_paired_gains(rows)
    timings = {**stages["timings_s"], "recognizers": time.time() - started}
    results = {
        "config": asdict(config),
        "recognizer_model": config.recognizer_model,
        "recognizer_start": (
            f"fine-tuned from the public feature extractor ({config.encoder})"
            if config.recognizer_start == "encoder"
            else f"from scratch ({TINY_MODEL})"
        )
        + "; the same start in every row",
        "rows": rows,
        "real_held_out_reference": next(iter(synthetic.values()))["summary"]["reference"],
        "timings_s": timings,
        "budget_cuts": stages["budget_cuts"],
        "artefacts": {
            "cold_start_adapter": str(output / "sft"),
            "ddpo_adapter": str(output / "ddpo"),
            "synthetic_datasets": {name: entry["dataset"] for name, entry in synthetic.items()},
            "reward_curves": str(output / "ddpo" / "reward_curves.png"),
            "cold_start_grid": str(output / "sft" / "samples.png"),
        },
    }
    if is_main_process():  # every process holds the same results; one writes them
        atomic_write_json(output / "results.json", results)
        atomic_write_text(output / "results.md", results_table(results) + "\n")
    return results
