"""The ``rlsyn-trl`` console script: one subcommand per stage, and ``run-all`` for the whole chain.

A stage subcommand hands its arguments to the stage recipe's ``cli(argv)``, the function behind
``accelerate launch recipes/<stage>.py``, so ``rlsyn-trl sft --config recipes/orl_faces/sft.yaml --max_steps 10``
runs exactly what ``accelerate launch recipes/sft.py --config recipes/orl_faces/sft.yaml --max_steps 10`` runs, in
one process. This module imports nothing heavy until a command runs: ``rlsyn-trl --help`` and a refused
``run-all`` option answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, replace

from . import __version__
from .utils.refusals import run_reporting_refusals

PROG = "rlsyn-trl"
RUN_ALL = ("run-all", "main")
RUN_ALL_HELP = (
    "The whole chain on the embedded ORL default, offline: priors (shipped) -> cold start -> DDPO -> generation -> "
    "recognizer rows, and a results table."
)
RUN_ALL_DESCRIPTION = (
    "Run every stage on the embedded ORL default (private identities s21-s40), offline, with the "
    "recipes/orl_faces/*.yaml settings, and write results.json / results.md to --output_dir. Every field of "
    "MainJobConfig is a flag (--field_name or --field-name)."
)


@dataclass(frozen=True)
class Stage:
    module: str  # rlsyn_trl.recipes.<module>
    help: str
    aliases: tuple[str, ...] = ()


STAGES = {
    "prior": Stage("pretrain_prior", "Train the public priors: identity feature extractor and pixel DiT generator."),
    "pretrain-encoder": Stage(
        "pretrain_encoder", "Train the identity feature extractor phi on public identities disjoint from the target."
    ),
    "sft": Stage(
        "sft", "Cold start: adapt the DiT to the target identities (identity embedders + LoRA).", ("cold-start",)
    ),
    "ddpo": Stage("ddpo", "Reward-guided RL (DDPO) of a cold-start adapter with the composite identity reward."),
    "generate": Stage("generate", "Sample a scored, memorisation-audited synthetic dataset from an adapter."),
    "train-recognizer": Stage(
        "train_recognizer", "Train and test the downstream recognizer on real (+ synthetic, selected) images."
    ),
}
STAGE_NAMES = {alias: name for name, stage in STAGES.items() for alias in (name, *stage.aliases)}
STAGE_EPILOG = (
    "Run '{prog} <stage> --help' for a stage's settings (its TrlParser fields). A stage takes --config with a YAML "
    "path, or the name of a packaged recipe such as orl_faces/sft, and any field as --<field> <value>."
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Reward-guided synthetic identity data on the Hugging Face stack (TRL, diffusers, accelerate).",
        epilog=STAGE_EPILOG.format(prog=PROG),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for name, stage in STAGES.items():
        # Listed for the overview only: main() hands a stage's arguments to the recipe before argparse sees them.
        commands.add_parser(name, aliases=list(stage.aliases), help=stage.help, add_help=False)
    # Listed for the overview: run_all parses the job's settings with the stages' parser.
    commands.add_parser(RUN_ALL[0], aliases=list(RUN_ALL[1:]), help=RUN_ALL_HELP, add_help=False)
    view = commands.add_parser(
        "inspect",
        help="Look at a synthetic dataset in a local app: real photos beside samples, scores, flagged pairs.",
        description="Start a local Gradio app (pip install 'rlsyn-trl[app]') over a synthetic dataset written by "
        "the generate stage: per identity, its real training photos beside its samples with their scores; "
        "'flagged only' shows each flagged sample beside its nearest real image. Nothing is uploaded.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    view.add_argument(
        "dataset",
        metavar="PATH_OR_HUB_ID",
        help="A generation run's folder, its dataset/ or hub/ "
        "folder, or a Hub dataset id (from the local cache when offline).",
    )
    view.add_argument("--revision", default=None, help="Revision of a Hub dataset.")
    view.add_argument("--adapter", default=None, help="Identity adapter (folder or Hub id): adds a sampling tab.")
    view.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps of the sampling tab.")
    view.add_argument("--data-dir", default=None, help="Where the real dataset's files are, if not the default.")
    view.add_argument("--cache-dir", default=None, help="datasets cache for the real split and the samples.")
    view.add_argument("--host", default="127.0.0.1", help="Address to bind; 127.0.0.1 keeps the app on this machine.")
    view.add_argument("--port", type=_positive_int, default=7860, help="Port to serve on.")
    return parser


def run_inspect(args: argparse.Namespace) -> int:
    from .inspection.app import build_app, check_port_free, import_gradio, launch

    import_gradio()  # a missing extra, or a port in use, is reported before any data is loaded
    check_port_free(args.host, args.port)
    from .inspection import load_inspection

    inspection = load_inspection(args.dataset, args.revision, args.data_dir, args.cache_dir)
    generator = None
    if args.adapter:
        from .generators import IdentityGenerator

        generator = IdentityGenerator.from_pretrained(args.adapter)
    print(f"Serving {args.dataset} on http://{args.host}:{args.port} (local only; Ctrl+C to stop)")
    launch(build_app(inspection, generator, steps=args.steps), host=args.host, port=args.port)
    return 0


def run_stage(name: str, argv: list[str]) -> int:
    """``rlsyn-trl <name> argv...``: the stage recipe's ``cli(argv)``, with ``rlsyn-trl <name>`` as its prog."""
    stage = STAGES[STAGE_NAMES[name]]
    recipe = importlib.import_module(f"rlsyn_trl.recipes.{stage.module}")
    recipe.cli(argv, prog=f"{PROG} {name}")
    return 0


def run_all(argv: list[str]) -> int:
    """``rlsyn-trl run-all argv...``: :class:`~rlsyn_trl.job.config.MainJobConfig` from the command line, then the
    job, as a data-parallel group where asked for.

    The settings are parsed by ``HfArgumentParser``, the parser under the stages' ``TrlParser`` (same flags from the
    same dataclass fields), without TrlParser's ``--config``, whose import also loads ``datasets``: a refused
    setting is a usage error (status 2, with the usage line) within a second, before torch or a stage is loaded.
    """
    from .utils.launch import is_main_process, launched, prefer_offline, relaunch, resolve_processes

    prefer_offline()  # the embedded job runs offline: set before huggingface_hub is imported, which reads it once
    from transformers import HfArgumentParser

    from .job.config import MainJobConfig

    parser = HfArgumentParser(MainJobConfig, prog=f"{PROG} {RUN_ALL[0]}", description=RUN_ALL_DESCRIPTION)
    try:
        (config,) = parser.parse_args_into_dataclasses(argv)
    except ValueError as error:  # MainJobConfig's checks
        parser.error(str(error))
    from .utils.runtime import setup_runtime

    processes, threads = resolve_processes(config.processes, config.threads)
    group = processes > 1 and not launched()
    setup_runtime(config.seed, mixed_precision=config.mixed_precision, threads=config.threads, offline=True)
    from .job.comparison import job_summary, results_table
    from .job.pipeline import run_main_job

    if group and config.stages != "recognizers":
        # The generative stages run as a data-parallel group; the recognizer rows then train here, with every thread
        # (a data-parallel recognizer step is slower on a CPU: its gradient all-reduce costs more than it saves).
        command = [RUN_ALL[0], *argv, "--processes", str(processes), "--stages", "generation"]
        status = relaunch(command, processes, threads)
        if status or config.stages == "generation":
            return status
        config = replace(config, stages="recognizers")
    results = run_main_job(config)
    if not is_main_process():
        return 0
    if config.stages == "generation":
        print("Synthetic datasets: " + ", ".join(entry["dataset"] for entry in results["synthetic"].values()))
        return 0
    print(results_table(results))
    print()
    print(job_summary(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_reporting_refusals(dispatch, argv)


def dispatch(argv: list[str]) -> int:
    """The command ``argv`` names: a stage, ``run-all``, ``inspect``, or the help."""
    if argv and argv[0] in STAGE_NAMES:
        return run_stage(argv[0], argv[1:])
    if argv and argv[0] in RUN_ALL:
        return run_all(argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if args.command == "inspect":
        return run_inspect(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
