"""The stage recipes: one module per stage, each with ``CONFIG_CLASSES``, ``main(...)`` and ``cli(argv)``.

``cli(argv)`` is the one command-line entry of a stage: ``accelerate launch recipes/<stage>.py --config ...`` and
``rlsyn-trl <stage> --config ...`` both call it. The recipe YAMLs ship with the package, so ``--config
orl_faces/sft`` (or ``orl_faces/sft.yaml``) names the packaged ``recipes/orl_faces/sft.yaml`` wherever no such file
exists, e.g. from an installed wheel.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent
NOT_STAGE_CONFIGS = ("accelerate_configs",)  # accelerate's own configs, for `accelerate launch --config_file`


def packaged_configs() -> list[str]:
    """The stage configs shipped with the package, as ``--config`` accepts them (``orl_faces/sft``, ...)."""
    return sorted(
        path.relative_to(RECIPES_DIR).with_suffix("").as_posix()
        for path in RECIPES_DIR.glob("*/*.yaml")
        if path.parent.name not in NOT_STAGE_CONFIGS
    )


def find_config(value: str) -> Path | None:
    """``value`` itself when it is a file, else the packaged config it names (``orl_faces/sft[.yaml]``, also with a
    leading ``recipes/``), else None."""
    if Path(value).expanduser().is_file():
        return Path(value).expanduser()
    name = Path(value).as_posix().removeprefix("./").removeprefix("recipes/")
    for candidate in (RECIPES_DIR / name, RECIPES_DIR / f"{name}.yaml"):
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
    return None


def resolve_config_argument(argv: Sequence[str]) -> list[str]:
    """``argv`` with its ``--config`` value (``--config X`` or ``--config=X``) made a path to an existing file.

    Raises ``FileNotFoundError`` naming the packaged configs when ``X`` is neither a file nor a packaged config.
    """
    argv = list(argv)
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            argv[index : index + 1] = ["--config", arg.split("=", 1)[1]]
            arg = "--config"
        if arg == "--config" and index + 1 < len(argv):
            value = argv[index + 1]
            path = find_config(value)
            if path is None:
                raise FileNotFoundError(
                    f"--config {value}: no such file, and no packaged config by that name. Packaged configs: "
                    + ", ".join(packaged_configs())
                )
            argv[index + 1] = str(path)
            break
    return argv


def with_config_path(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> list[str]:
    """``argv`` (default ``sys.argv[1:]``) for ``parser.parse_args_and_config``, with a packaged config found by name.

    TrlParser takes ``--config`` outside argparse, so its help never mentions it: this adds that to the help. A
    config that is neither a file nor packaged exits through ``parser.error`` (status 2, listing the packaged ones).
    """
    parser.epilog = parser.epilog or (
        "--config CONFIG: a YAML file of field values (the command line overrides them), or the name of a config "
        "shipped with the package: " + ", ".join(packaged_configs())
    )
    try:
        return resolve_config_argument(sys.argv[1:] if argv is None else argv)
    except FileNotFoundError as error:
        parser.error(str(error))


def parse_stage(config_classes: tuple, argv: Sequence[str] | None = None, prog: str | None = None) -> tuple:
    """A stage's configs from ``argv`` (default ``sys.argv[1:]``) and its ``--config`` YAML, parsed by ``TrlParser``."""
    from trl import TrlParser

    parser = TrlParser(config_classes, prog=prog)
    return tuple(parser.parse_args_and_config(with_config_path(parser, argv)))
