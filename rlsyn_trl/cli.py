"""The ``rlsyn-trl`` console script."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlsyn-trl", description="Reward-guided synthetic identity data.")
    commands = parser.add_subparsers(dest="command", required=True)
    job = commands.add_parser("main", help="Run the whole chain on the embedded ORL default, offline.")
    job.add_argument("--output-dir", default="outputs/main")
    job.add_argument("--shots", type=int, default=1)
    job.add_argument("--split-seed", type=int, default=0)
    job.add_argument("--seed", type=int, default=0)
    job.add_argument("--quick", action="store_true", help="Few steps everywhere (about 5 minutes on 2 cores).")
    job.add_argument("--no-reuse", action="store_true", help="Redo stages already finished in --output-dir.")
    job.add_argument("--ablation", action="store_true", help="Add the paper's ablation rows (more DDPO runs).")
    job.add_argument(
        "--recognizer-start",
        choices=["encoder", "scratch"],
        default="encoder",
        help="Fine-tune the public feature extractor (default) or train the tiny ResNet from scratch.",
    )
    args = parser.parse_args(argv)
    from .data import check_identity_options  # a few seconds, against the stages' much longer imports

    try:
        check_identity_options("orl_faces", "private", shots=args.shots, seed=args.split_seed)
    except ValueError as error:
        job.error(f"{error} (--shots / --split-seed)")  # exits with status 2 and the usage line

    from .pipeline import MainJobConfig, results_table, run_main_job
    from .runtime import setup_runtime

    setup_runtime(args.seed, offline=True)
    results = run_main_job(
        MainJobConfig(
            output_dir=args.output_dir,
            shots=args.shots,
            split_seed=args.split_seed,
            seed=args.seed,
            quick=args.quick,
            reuse=not args.no_reuse,
            ablation=args.ablation,
            recognizer_start=args.recognizer_start,
        )
    )
    print(results_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
