"""Memorisation, identity consistency and realism of synthetic private ORL identities, next to real held-out photos.

    python benchmarks/synthetic_quality.py [--shots 1 2] [--samples-per-identity 50] [--seed 0]

For each number of shots: a cold-start adapter (``recipes/orl_faces/sft.yaml`` with that many shots) and an RL
adapter on top of it (``recipes/orl_faces/ddpo.yaml``); then the generation recipe draws the samples,
scores and audits them. Every adapter is sampled with the same sampler (DDPO's, unless --no-rl: the policy was
optimised for it). The real held-out row is the audit and
checks applied to the private test images. Adapters and datasets are reused when their folders already hold them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from pathlib import Path

from rlsyn_trl.generation import AUDIT_FILE, GenerationConfig
from rlsyn_trl.job.pipeline import embedded_recipe
from rlsyn_trl.recipes import ddpo, sft
from rlsyn_trl.recipes import generate as generation
from rlsyn_trl.trainers import ColdStartConfig, RLSynDDPOConfig
from rlsyn_trl.utils.runtime import setup_runtime

logger = logging.getLogger("synthetic_quality")


def recipe(config_class: type, stage: str, **overrides):
    """The embedded recipe of ``stage`` (``recipes/orl_faces/<stage>.yaml``) with this benchmark's overrides."""
    return config_class(**{**embedded_recipe(stage), **overrides})


def cold_start_adapter(shots: int, output: Path) -> Path:
    """The SFT recipe with ``shots``; a folder whose summary records the same config is reused.

    The recipe's wall-clock cap is lifted: on a shared CPU it would cut training at a load-dependent step, and the
    adapters compared here must not depend on what else the machine was doing.
    """
    config = recipe(ColdStartConfig, "sft", shots=shots, output_dir=str(output), max_minutes=None)
    summary = output / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text())["config"] == dataclasses.asdict(config)):
        sft.main(config)
    return output


def rl_adapter(cold_start: Path, shots: int, output: Path) -> tuple[Path, dict]:
    """A DDPO adapter on top of ``cold_start`` and its sampler; as for the cold start, the wall-clock cap is lifted
    (``num_epochs`` decides the result)."""
    overrides = {
        "adapter": str(cold_start),
        "shots": shots,
        "output_dir": str(output),
        "max_minutes": None,
        "push_to_hub": False,
        "eval_seeds": [],
    }
    config = recipe(RLSynDDPOConfig, "ddpo", **overrides)
    # The trainer fills some config fields with live objects, so the recipe + overrides identify the run.
    stamp = {"recipe": embedded_recipe("ddpo"), "overrides": overrides}
    marker = output / "benchmark_recipe.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == stamp):
        shutil.rmtree(output, ignore_errors=True)  # an earlier recipe's adapter: never mix its checkpoints in
        ddpo.main(config)
        marker.write_text(json.dumps(stamp))
    sampler = {
        "num_inference_steps": config.sample_num_steps,
        "guidance_scale": config.sample_guidance_scale,
        "eta": config.sample_eta,
    }
    return output, sampler


def generate(config: GenerationConfig) -> dict:
    """The generation summary; a folder this benchmark filled earlier with other adapters or settings is redone."""
    try:
        return generation.main(config)[1]
    except FileExistsError:
        logger.info("Regenerating %s: it holds an earlier run with other adapters or settings", config.output_dir)
        shutil.rmtree(config.output_dir)
        return generation.main(config)[1]


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def table(rows: list[dict]) -> str:
    header = (
        "| shots | images | n | memorised (either) | under pixel thr. | under feature thr. | identity consistency "
        "| face detected | threshold pairs |"
    )
    lines = [header, "|" + " --- |" * 9]
    for row in rows:
        memorization = row["memorization"]
        lines.append(
            f"| {row['shots']} | {row['name']} | {memorization['total']} | {percent(memorization['rate'])} | "
            f"{percent(memorization['pixel_rate'])} | {percent(memorization['feature_rate'])} | "
            f"{percent(row['identity_consistency'])} | {percent(row['face_detection_rate'])} | {row['pairs']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samples-per-identity", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="Base seed of the generated samples.")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="Default: DDPO's, else 25.")
    parser.add_argument("--guidance-scale", type=float, default=None, help="Default: DDPO's, else 2.0.")
    parser.add_argument("--eta", type=float, default=None, help="Default: DDPO's, else 0.0.")
    parser.add_argument("--no-rl", action="store_true", help="Cold-start rows only.")
    parser.add_argument("--output-dir", default="outputs/benchmarks/synthetic_quality")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    setup_runtime(threads=args.threads, offline=True)  # one precision (the recipes' auto) for every stage
    output = Path(args.output_dir)

    adapters: dict[int, list[tuple[str, Path]]] = {}
    sampler = {"num_inference_steps": 25, "guidance_scale": 2.0, "eta": 0.0}
    for shots in args.shots:
        cold_start = cold_start_adapter(shots, output / f"sft_{shots}shot")
        adapters[shots] = [("cold start", cold_start)]
        if args.no_rl:
            continue
        rl, sampler = rl_adapter(cold_start, shots, output / f"ddpo_{shots}shot")
        adapters[shots].append(("RL (DDPO)", rl))
    for key in sampler:
        override = getattr(args, key)
        sampler[key] = sampler[key] if override is None else override

    rows = []
    for shots, entries in adapters.items():
        summary = {}
        for name, adapter in entries:
            tag = "sft" if name == "cold start" else "ddpo"
            config = GenerationConfig(
                adapter=str(adapter),
                samples_per_identity=args.samples_per_identity,
                seed=args.seed,
                output_dir=str(output / f"synthetic_{tag}_{shots}shot"),
                **sampler,
            )
            summary = generate(config)
            thresholds = summary["audit"]["thresholds"]
            rows.append(
                {
                    "shots": shots,
                    "name": name,
                    "memorization": summary["audit"]["memorization"],
                    "identity_consistency": summary["identity_consistency"],
                    "face_detection_rate": summary["face_detection_rate"],
                    "pairs": f"{thresholds['num_pairs']} {thresholds['source']}",
                }
            )
        reference = summary["reference"]
        rows.append(
            {
                "shots": shots,
                "name": "real held-out",
                "memorization": reference["memorization"],
                "identity_consistency": reference["identity_consistency"],
                "face_detection_rate": reference["face_detection_rate"],
                "pairs": rows[-1]["pairs"],
            }
        )
    markdown = table(rows)
    settings = (
        f"ORL private s21-s40, split seed 0, {args.samples_per_identity} samples per identity, base seed {args.seed}, "
        f"DDIM {sampler['num_inference_steps']} steps, guidance {sampler['guidance_scale']}, eta {sampler['eta']}."
    )
    report = markdown + "\n\n" + settings
    print(report)
    output.mkdir(parents=True, exist_ok=True)
    (output / "synthetic_quality.md").write_text(report + "\n")
    (output / "synthetic_quality.json").write_text(json.dumps({"rows": rows, "sampler": sampler}, indent=2))
    logger.info("Per-run audits: %s", ", ".join(str(path) for path in output.glob(f"synthetic_*/{AUDIT_FILE}")))


if __name__ == "__main__":
    main()
