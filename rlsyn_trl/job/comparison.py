"""The end-to-end job's comparison: recognizer rows trained side by side, the results table and the summary.

Every row trains and tests the same recognizer start on the same real split, with or without a synthetic set, so
the rows differ only by their data. The rows are independent, so they can train side by side in spawned workers
(``recognizer_workers``), each with its share of the cores; on the 2-core CPU of docs/results.md that was no faster
than one after another with both threads (a worker pays its imports), and a data-parallel row was slower still.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..recognizer import RecognizerConfig
from ..utils.launch import available_cores
from ..utils.runtime import setup_runtime

if TYPE_CHECKING:  # the recipes import the package's modules: import them when a row runs
    from ..recipes.train_recognizer import RecognizerScriptArguments

logger = logging.getLogger(__name__)

AUGMENTED_ROW = "real + standard augmentation"
FULL_METHOD_ROW = "full method (RL synthetic + selection)"
NO_AUGMENTATION = dict(flip=False, crop_padding=0, affine_degrees=0.0, affine_scale=0.0, brightness=0.0, contrast=0.0)


def recognizer_precision(mixed_precision: str) -> dict:
    """``TrainingArguments`` overrides of a recognizer row for the job's precision ('auto', 'no': fp32, as before).

    Without CUDA, ``TrainingArguments`` accepts bf16 only with ``use_cpu``.
    """
    if mixed_precision not in ("bf16", "fp16"):
        return {}
    return {mixed_precision: True, **({} if torch.cuda.is_available() else {"use_cpu": True})}


def recognizer_config(output_dir: Path, model: str, steps: int, seed: int, **overrides) -> RecognizerConfig:
    """A main-job recognizer row: the recipe's defaults with this start, step count and seed, quiet."""
    return RecognizerConfig(
        output_dir=str(output_dir),
        model=model,
        max_steps=steps,
        seed=seed,
        report_to=[],
        disable_tqdm=True,
        **overrides,
    )


def recognizer_rows(ablation: bool, paper_rows: bool = True) -> list[tuple[str, str | None, dict]]:
    """(method, synthetic source, recognizer overrides) of the job's comparison table.

    The default table is the paper's main comparison: real only, real + augmentation, the full method. The rows
    that locate the gain (cold-start samples, selection, one reward term at a time) are the ablation's: the
    cold-start row alone cost a second synthetic dataset and recognizer, about a sixth of the embedded job.
    """
    runs = [
        ("real only", None, NO_AUGMENTATION),
        (AUGMENTED_ROW, None, {}),
    ]
    if not paper_rows:
        return runs
    if ablation:
        runs += [
            ("+ cold-start synthetic", "cold_start", {}),
            ("+ selection", "cold_start", {"selection": True}),
            ("+ R_sem", "rl_sem", {"selection": True}),
            ("+ R_cov", "rl_sem_cov", {"selection": True}),
        ]
    runs.append((FULL_METHOD_ROW, "rl", {"selection": True}))
    return runs


@dataclass(frozen=True)
class RowJob:
    """One row of the table: its recognizer's folder, start, step count, seed and recipe overrides."""

    method: str
    output_dir: str
    model: str
    steps: int
    seed: int
    overrides: dict = field(default_factory=dict)


def train_row(split: RecognizerScriptArguments, job: RowJob) -> dict:
    """Train and test one row's recognizer through the recipe's entry point; its test metrics."""
    from ..recipes import train_recognizer as recipe

    logger.info("Recognizer row: %s", job.method)
    config = recognizer_config(Path(job.output_dir), job.model, job.steps, job.seed, **job.overrides)
    return recipe.main(split, config)


def _worker_setup(threads: int) -> None:
    setup_runtime(threads=threads, offline=True)


def train_rows(split: RecognizerScriptArguments, jobs: list[RowJob], workers: int = 1) -> list[dict]:
    """Every row's test metrics, in order: in this process, or side by side in ``workers`` fresh processes.

    The workers are spawned (not forked: the caller may hold torch's thread pool) and split the cores; a row's
    result depends on its seed and data only, not on where it ran.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [train_row(split, job) for job in jobs]
    workers = min(workers, len(jobs))
    threads = max(1, available_cores() // workers)
    logger.info("Recognizer rows: %d side by side, %d thread(s) each", workers, threads)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_setup, initargs=(threads,)) as pool:
        return list(pool.map(train_row, [split] * len(jobs), jobs))


def paired_gain(accuracies: list[float], baseline: list[float]) -> tuple[float, float | None]:
    """A row's mean gain over the baseline row trained with the same seeds, and the standard error of that mean
    (None with one seed). The rows share their split, test photos and seeds, so the paired difference is what the
    row's data change: the seed alone moves a row by a few points, a paired gain far less."""
    gains = np.asarray(accuracies, dtype=float) - np.asarray(baseline, dtype=float)
    error = float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else None
    return float(gains.mean()), error


def add_paired_gains(rows: list[dict]) -> None:
    """Each trained row's gain over real + standard augmentation (``gain_over_augmentation``, and with several
    recognizer seeds ``gain_standard_error``), in accuracy points, in place."""
    baseline = next(row["accuracies"] for row in rows if row["method"] == AUGMENTED_ROW)
    for row in rows:
        if row["method"] != AUGMENTED_ROW and "accuracies" in row:
            gain, error = paired_gain(row["accuracies"], baseline)
            row["gain_over_augmentation"] = 100 * gain
            if error is not None:
                row["gain_standard_error"] = 100 * error


def format_gain(row: dict) -> str:
    """``+1.2 +- 0.7`` (points, with its standard error when the row has one), ``-`` for a row without a gain."""
    if "gain_over_augmentation" not in row:
        return "-"
    error = row.get("gain_standard_error")
    return f"{row['gain_over_augmentation']:+.1f}" + ("" if error is None else f" +- {error:.1f}")


def full_method_reading(full: dict, best_real: float) -> str:
    """What the full method's row says: within one standard error of augmentation alone (with several seeds), help
    (above both real rows) or not."""
    error = full.get("gain_standard_error")
    if error is not None and abs(full["gain_over_augmentation"]) <= error:
        return "are within one standard error of real + standard augmentation"
    return "help" if full["accuracy"] > best_real else "do not help"


def job_summary(results: dict) -> str:
    """What a user needs after the table: where everything went, time per stage, budget cuts, what the rows say."""
    output = Path(results["config"]["output_dir"])
    artefacts = results["artefacts"]
    rows = {row["method"]: row for row in results["rows"]}
    seeds = len(rows[AUGMENTED_ROW].get("accuracies", [None]))
    timings = ", ".join(f"{stage.replace('_', ' ')} {seconds:.0f} s" for stage, seconds in results["timings_s"].items())
    lines = [
        f"Results: {output / 'results.md'} and {output / 'results.json'}",
        f"Adapters: {artefacts['cold_start_adapter']} (cold start), {artefacts['ddpo_adapter']} (DDPO)",
        "Synthetic datasets: " + ", ".join(artefacts["synthetic_datasets"].values()),
        f"Reward curves: {artefacts['reward_curves']}; cold-start samples: {artefacts['cold_start_grid']}",
        f"Time: {timings} (total {sum(results['timings_s'].values()):.0f} s)",
        "Time budgets: " + ("; ".join(results["budget_cuts"]) or "no stage was cut short"),
        reading(rows, seeds),
    ]
    return "\n".join(lines)


def reading(rows: dict[str, dict], seeds: int) -> str:
    """The summary's reading of the table: the full method against the real rows, with the seeds it rests on."""
    real, augmented = rows["real only"]["accuracy"], rows[AUGMENTED_ROW]["accuracy"]
    start = "Reading: "
    if FULL_METHOD_ROW in rows:
        full = rows[FULL_METHOD_ROW]
        verdict = full_method_reading(full, max(real, augmented))
        start += (
            f"the full method reaches {100 * full['accuracy']:.1f}% on the held-out real photos against "
            f"{100 * real:.1f}% for real only and {100 * augmented:.1f}% for real + standard augmentation (gain "
            f"{format_gain(full)} points), so on this split the synthetic samples {verdict}"
        )
    else:
        start += f"real only reaches {100 * real:.1f}%, real + standard augmentation {100 * augmented:.1f}%"
    if seeds > 1:
        noise = f" (mean of {seeds} recognizer seeds, gains paired by seed; compare means over split seeds too)."
    else:
        noise = (
            " (one split and one recognizer seed move a row by a few points: --recognizer_seeds 3 pairs each row "
            "with real + standard augmentation over three seeds; compare means over split seeds)."
        )
    return (
        start
        + noise
        + " Identity consistency is measured with the reward's own encoder, which the policy is trained to please, "
        "and with an independent evaluator that never saw the reward (when the generation recipe names one)."
    )


def results_table(results: dict) -> str:
    def percent(value):
        return "-" if value is None else f"{100 * value:.1f}"

    seeds = next((row["seeds"] for row in results["rows"] if "seeds" in row), [results["config"]["seed"]])
    lines = [
        f"ORL private, {results['config']['shots']} shot(s), split seed {results['config']['split_seed']}; "
        f"recognizer {results['recognizer_start']}; recognizer seeds {', '.join(map(str, seeds))}"
        + (" (accuracy: their mean; gain: paired by seed, +- its standard error)" if len(seeds) > 1 else ""),
        "",
        f"| method | test accuracy | gain over {AUGMENTED_ROW} (points) | synthetic identity consistency "
        "(reward's phi) | identity consistency (independent evaluator) | synthetic face detection | memorised |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['method']} | {percent(row['accuracy'])} | {format_gain(row)} | "
            f"{percent(row.get('identity_consistency'))} | "
            f"{percent(row.get('evaluator_consistency'))} | {percent(row.get('face_detection_rate'))} | "
            f"{percent(row.get('memorization_rate'))} |"
        )
    reference = results.get("real_held_out_reference")
    if reference:
        lines.append(
            f"| (real held-out photos, for reference) | - | - | {percent(reference['identity_consistency'])} | "
            f"{percent(reference.get('evaluator_identity_consistency'))} | "
            f"{percent(reference['face_detection_rate'])} | {percent(reference['memorization']['rate'])} |"
        )
    return "\n".join(lines)
