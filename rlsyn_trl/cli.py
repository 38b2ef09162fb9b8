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
from .utils.launch import MAX_EMBEDDED_PROCESSES
from .utils.refusals import run_reporting_refusals

PROG = "rlsyn-trl"
PRECISION_CHOICES = ("auto", "no", "bf16", "fp16")
# ``rlsyn_trl.data.orl.ALLOWED_SHOTS``, repeated here so a bad --shots is refused before datasets is imported
# (tests/test_cli.py checks that the two agree).
ORL_PRIVATE_SHOTS = (1, 2, 3, 5)


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


def _strength(text: str) -> float:
    """A --reference-strengths value: one strength in (0, 1], refused by argparse before any stage starts."""
    from .settings import SettingsError, parse_reference_strength

    try:
        low, high = parse_reference_strength(text, "reference-strengths")
    except SettingsError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if low != high:
        raise argparse.ArgumentTypeError(f"{text!r}: give single strengths here (e.g. 0.4 0.6 0.8), not a range.")
    return low


def _orl_shots(text: str) -> int:
    """--shots as ORL's private split allows it; the message is the one ``check_identity_options`` gives."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value not in ORL_PRIVATE_SHOTS:
        allowed = ", ".join(map(str, ORL_PRIVATE_SHOTS))
        raise argparse.ArgumentTypeError(
            f"orl_faces/private: shots={text} is not allowed; shots (real training images per private identity) "
            f"must be one of {allowed}."
        )
    return value


def _split_seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"orl_faces/private: seed={text} is not allowed; seed (the split seed) must be an integer >= 0."
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _processes(text: str) -> str | int:
    if text == "auto":
        return text
    value = _positive_int(text)
    if value > MAX_EMBEDDED_PROCESSES:
        raise argparse.ArgumentTypeError(
            f"the embedded DDPO layout divides among at most {MAX_EMBEDDED_PROCESSES} processes, got {text}: "
            "use auto, 1 or 2 (run the stages with accelerate launch for other layouts)"
        )
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
    job = commands.add_parser(
        "run-all",
        aliases=["main"],
        help="The whole chain on the embedded ORL default, offline: priors (shipped) -> cold start -> DDPO -> "
        "generation -> recognizer rows, and a results table.",
        description="Run every stage on the embedded ORL default (private identities s21-s40), offline, with the "
        "recipes/orl_faces/*.yaml settings, and write results.json / results.md to --output-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    job.add_argument("--output-dir", default="outputs/main", help="Folder of the stages' outputs and the results.")
    job.add_argument(
        "--shots",
        type=_orl_shots,
        default=1,
        metavar="{" + ",".join(map(str, ORL_PRIVATE_SHOTS)) + "}",
        help="Real training images per target identity.",
    )
    job.add_argument(
        "--split-seed", type=_split_seed, default=0, help="Seed of the ORL private train/test split (>= 0)."
    )
    job.add_argument("--seed", type=int, default=0, help="Seed of every stage (batches, noise, sampling).")
    job.add_argument("--quick", action="store_true", help="Few steps everywhere (about 5 minutes on 2 cores).")
    job.add_argument("--no-reuse", action="store_true", help="Redo stages already finished in --output-dir.")
    job.add_argument("--ablation", action="store_true", help="Add the paper's ablation rows (more DDPO runs).")
    job.add_argument(
        "--reference-strengths",
        type=_strength,
        nargs="*",
        default=[],
        help="Add reference-guided rows (chains started from the real photos noised to each strength in (0, 1]).",
    )
    job.add_argument(
        "--recognizer-start",
        choices=["encoder", "scratch"],
        default="encoder",
        help="Fine-tune the public feature extractor, or train the tiny ResNet from scratch.",
    )
    job.add_argument(
        "--stages",
        choices=["all", "generation", "recognizers"],
        default="all",
        help="generation: the cold start, DDPO and synthetic datasets only; recognizers: the comparison rows on "
        "the generative stages a former run left in --output-dir.",
    )
    job.add_argument(
        "--processes",
        type=_processes,
        default="auto",
        help="Data-parallel processes of the cold start, DDPO and generation (accelerate launch). auto: one per CPU "
        "core up to 2 on a machine without GPU, 1 with a GPU.",
    )
    job.add_argument(
        "--recognizer-workers",
        type=_positive_int,
        default=1,
        help="Recognizer rows trained side by side, each in a spawned process with its share of the cores.",
    )
    job.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads per process (None: the cores shared among the processes; torch's choice for one).",
    )
    job.add_argument(
        "--mixed-precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="Precision of every stage; auto: bf16 where the device computes it natively, else fp32 (no).",
    )
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


def run_all(args: argparse.Namespace, argv: list[str]) -> int:
    from .utils.launch import is_main_process, launched, relaunch, resolve_processes
    from .utils.runtime import setup_runtime

    processes, threads = resolve_processes(args.processes, args.threads)
    group = processes > 1 and not launched()
    # First: the offline defaults must be in the environment before huggingface_hub and datasets are imported.
    setup_runtime(args.seed, mixed_precision=args.mixed_precision, threads=args.threads, offline=True)
    from .job.comparison import job_summary, results_table
    from .job.pipeline import MainJobConfig, run_main_job

    config = MainJobConfig(  # checks every setting before any stage starts
        output_dir=args.output_dir,
        shots=args.shots,
        split_seed=args.split_seed,
        seed=args.seed,
        quick=args.quick,
        reuse=not args.no_reuse,
        ablation=args.ablation,
        reference_strengths=args.reference_strengths,
        recognizer_start=args.recognizer_start,
        mixed_precision=args.mixed_precision,
        stages=args.stages,
        recognizer_workers=args.recognizer_workers,
    )
    if group and config.stages != "recognizers":
        # The generative stages run as a data-parallel group; the recognizer rows then train here, with every thread
        # (a data-parallel recognizer step is slower on a CPU: its gradient all-reduce costs more than it saves).
        status = relaunch([*argv, "--processes", str(processes), "--stages", "generation"], processes, threads)
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
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if args.command in ("run-all", "main"):
        return run_all(args, argv)
    if args.command == "inspect":
        return run_inspect(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
