"""The paper's ablation on the embedded benchmark: mean +- std over split seeds, for 1 and 2 shots.

    OMP_NUM_THREADS=2 python benchmarks/ablation.py [--shots 1 2] [--seeds 0 1 2] [--quick]
        [--reference-strengths 0.4 0.6 0.8] [--no-reference-ddpo] [--reference-only]
        [--main-only] [--prior FOLDER] [--encoder FOLDER] [--guidance-scale G] [--guidance-interval LO,HI]
        [--inference-steps N]

Each (shots, split seed) is one main job with ``ablation=True`` (its own cold start and DDPO runs; the DDPO rows
switch reward terms on in turn: R_sem, R_sem + R_cov, all three), in
``outputs/benchmarks/ablation/<shots>shot_seed<seed>``; finished stages are reused, so a stopped run continues.
``ablation.md`` is rewritten after every run; ``--report-only`` tabulates the finished runs without training.
Rows: raw-pixel 1-NN | real only | real + standard augmentation | + cold-start synthetic | + selection | + R_sem |
+ R_cov | + R_exp (full method). About 20 minutes per (shots, seed) on 2 CPU cores, 2 hours in all.

``--reference-strengths`` adds, per strength s, the reference-guided rows (SDEdit starts from the real training
images): cold-start samples started at s, and a DDPO run trained on the truncated chain whose samples start at s (with
selection); ``--reference-only`` keeps only those next to real only and real + standard augmentation (in
``<shots>shot_seed<seed>_reference``, its own cold start). Every row uses the same recognizer start and thread count.
``--main-only`` keeps the main comparison (real only, real + augmentation, full method), ``--prior`` / ``--encoder``
put another prior and phi under every stage (e.g. a prior trained with synthetic public faces) to compare priors on
the same splits. A second table gives each synthetic row's identity consistency (reward's phi and the independent
evaluator) and face-detection rate, mean over the seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rlsyn_trl.job.pipeline import MainJobConfig, run_main_job
from rlsyn_trl.utils.runtime import setup_runtime

BASELINE = "real + standard augmentation"
REAL_ROWS = ("raw-pixel 1-NN", "real only", BASELINE)


def _methods(runs: dict[int, list[dict]]) -> list[str]:
    """Every row's method in first-seen order: runs of other shot counts may have other rows (e.g. fewer strengths)."""
    return list(dict.fromkeys(row["method"] for done in runs.values() for run in done for row in run["rows"]))


def _rows(done: list[dict], method: str) -> list[dict]:
    """The runs' rows for ``method`` (matched by name, not position)."""
    return [row for run in done for row in run["rows"] if row["method"] == method]


def ablation_table(runs: dict[int, list[dict]]) -> str:
    """Markdown: one row per method, one column per shot count, accuracy mean +- std over the runs' seeds."""
    shots = sorted(runs)
    lines = ["| method | " + " | ".join(f"{k} shot{'s' if k > 1 else ''}" for k in shots) + " |"]
    lines.append("|---|" + "---|" * len(shots))
    for method in _methods(runs):
        cells = []
        for k in shots:
            accuracies = 100 * np.array([row["accuracy"] for row in _rows(runs[k], method)])
            spread = f" +- {accuracies.std():.1f}" if len(accuracies) > 1 else ""
            cells.append(f"{accuracies.mean():.1f}{spread} (n={len(accuracies)})" if len(accuracies) else "-")
        name = "+ R_exp (full method)" if method.startswith("full method") else method
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gain_table(runs: dict[int, list[dict]], baseline: str = BASELINE) -> str:
    """Markdown: each synthetic row's gain over ``baseline`` on the same split (paired), next to the baseline's spread.

    The spread over splits is mostly the splits' difficulty, which a paired gain cancels: a row that wins on every
    split by a margin smaller than the spread shows in the per-split column.
    """
    lines = [f"| method | shots | gain over {baseline}, mean | per split seed | {baseline}: std over splits |"]
    lines.append("|---|---|---|---|---|")
    for k in sorted(runs):
        for method in _methods(runs):
            if method in REAL_ROWS:
                continue
            pairs = []
            for run in runs[k]:
                accuracy = {row["method"]: row["accuracy"] for row in run["rows"]}
                if method in accuracy and baseline in accuracy:
                    pairs.append((run["config"]["split_seed"], 100 * accuracy[method], 100 * accuracy[baseline]))
            if not pairs:
                continue
            gains = [mine - base for _, mine, base in pairs]
            per_split = ", ".join(f"{seed}: {gain:+.1f}" for (seed, _, _), gain in zip(pairs, gains))
            spread = np.std([base for _, _, base in pairs])
            lines.append(f"| {method} | {k} | {np.mean(gains):+.1f} | {per_split} | {spread:.1f} |")
    return "\n".join(lines)


def quality_table(runs: dict[int, list[dict]]) -> str:
    """Markdown: per synthetic row, identity consistency (phi, evaluator) and face detection, mean over seeds."""

    def mean(values: list) -> str:
        values = [v for v in values if v is not None]
        return f"{100 * np.mean(values):.1f}" if values else "-"

    lines = ["| method | shots | consistency (phi) | consistency (evaluator) | face detection | memorised |"]
    lines.append("|---|---|---|---|---|---|")
    for k in sorted(runs):
        for method in _methods(runs):
            rows = _rows(runs[k], method)
            if not rows or "identity_consistency" not in rows[0]:
                continue
            cells = [
                mean([row.get(key) for row in rows])
                for key in ("identity_consistency", "evaluator_consistency", "face_detection_rate", "memorization_rate")
            ]
            lines.append(f"| {method} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="Few steps everywhere (a smoke run of the benchmark).")
    parser.add_argument("--output-dir", default="outputs/benchmarks/ablation")
    parser.add_argument(
        "--report-only", action="store_true", help="Tabulate the runs already finished in --output-dir; train nothing."
    )
    parser.add_argument("--reference-strengths", type=float, nargs="*", default=[], help="Reference-guided rows.")
    parser.add_argument("--no-reference-ddpo", action="store_true", help="Reference-guided cold-start rows only.")
    parser.add_argument("--reference-only", action="store_true", help="Only real rows + the reference-guided rows.")
    parser.add_argument("--main-only", action="store_true", help="The main comparison's rows, without the ablation's.")
    parser.add_argument("--prior", default=MainJobConfig.prior, help="The DiT prior of every run (folder or Hub id).")
    parser.add_argument("--encoder", default=MainJobConfig.encoder, help="phi, and the recognizers' start.")
    job_defaults = MainJobConfig()
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=job_defaults.guidance_scale,
        help="Guidance of the synthetic datasets (default: generate.yaml's).",
    )
    parser.add_argument(
        "--guidance-interval",
        default=job_defaults.guidance_interval,
        help="Noise levels t/T \"lo,hi\" where the datasets' guidance applies (default: generate.yaml's).",
    )
    parser.add_argument(
        "--inference-steps", type=int, default=None, help="Deterministic DDIM steps of the synthetic datasets."
    )
    parser.add_argument(
        "--recognizer-seeds", type=int, default=1, help="Recognizers per row (seed, seed + 1, ...): rows read the mean."
    )
    args = parser.parse_args()
    if args.reference_only and not args.reference_strengths:
        parser.error("--reference-only needs --reference-strengths")
    setup_runtime(offline=True)  # the stages seed themselves from each job's seed
    output = Path(args.output_dir)
    runs: dict[int, list[dict]] = {}
    for shots in args.shots:
        for seed in args.seeds:
            folder = output / f"{shots}shot_seed{seed}{'_reference' if args.reference_only else ''}"
            if args.report_only:
                if (folder / "results.json").is_file():
                    runs.setdefault(shots, []).append(json.loads((folder / "results.json").read_text()))
                continue
            job = MainJobConfig(
                output_dir=str(folder),
                shots=shots,
                split_seed=seed,
                seed=seed,
                quick=args.quick,
                ablation=not (args.reference_only or args.main_only),
                prior=args.prior,
                encoder=args.encoder,
                guidance_scale=args.guidance_scale,
                guidance_interval=args.guidance_interval,
                inference_steps=args.inference_steps,
                paper_rows=not args.reference_only,
                reference_strengths=args.reference_strengths,
                reference_ddpo=not args.no_reference_ddpo,
                recognizer_seeds=args.recognizer_seeds,
            )
            runs.setdefault(shots, []).append(run_main_job(job))
            write_report(runs, output)  # after every run: a stopped benchmark keeps its finished rows
    if not runs:
        raise SystemExit(f"No finished run (results.json) in {output}/<shots>shot_seed<seed>: drop --report-only.")
    print(write_report(runs, output))


def write_report(runs: dict[int, list[dict]], output: Path) -> str:
    """``ablation.md`` and ``ablation.json`` for the runs finished so far; returns the Markdown."""
    seeds = "; ".join(f"{k} shot(s): {[run['config']['split_seed'] for run in done]}" for k, done in runs.items())
    first = next(iter(runs.values()))[0]
    header = (
        f"ORL private identities, split seeds {seeds} (each its own cold start and DDPO runs), test accuracy % "
        f"mean +- std; recognizer {first['recognizer_start']}."
    )
    tables = (ablation_table(runs), gain_table(runs), quality_table(runs))
    report = header + "\n\n" + "\n\n".join(tables)
    output.mkdir(parents=True, exist_ok=True)
    (output / "ablation.md").write_text(report + "\n")
    (output / "ablation.json").write_text(json.dumps({str(k): v for k, v in runs.items()}, indent=2))
    return report


if __name__ == "__main__":
    main()
