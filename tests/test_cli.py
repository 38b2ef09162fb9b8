"""The ``rlsyn-trl`` console script: overview, stage subcommands (the recipes' own parsers), run-all's options."""

import importlib
import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import rlsyn_trl
from rlsyn_trl import cli
from rlsyn_trl.recipes import RECIPES_DIR, packaged_configs
from rlsyn_trl.utils.log_filters import TORCHVISION_FALLBACK_LOGGER

REPO = Path(__file__).resolve().parents[1]
STAGE_FLAGS = {
    "prior": ["--generator_steps", "--train_encoder", "--use_lfw_faces"],
    "pretrain-encoder": ["--target_dataset_name", "--exclude_target_identities", "--encoder_steps"],
    "sft": ["--base_model", "--max_steps", "--lora_rank", "--shots"],
    "cold-start": ["--base_model", "--max_steps"],
    "ddpo": ["--adapter", "--num_epochs", "--reward_weights", "--sample_num_steps"],
    "generate": ["--adapter", "--samples_per_identity", "--push_to_hub"],
    "train-recognizer": ["--synthetic_dataset", "--selection", "--verification_sets", "--max_steps"],
}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlsyn_trl.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def test_plain_command_lists_the_subcommands(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    stages = ("prior", "pretrain-encoder", "sft (cold-start)", "ddpo", "generate", "train-recognizer", "run-all (main)")
    for name in stages:
        assert name in out
    assert "rlsyn-trl <stage> --help" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rlsyn-trl {rlsyn_trl.__version__}"


@pytest.mark.parametrize("stage", sorted(STAGE_FLAGS))
def test_stage_help_is_the_recipe_parser(stage, capsys):
    """``rlsyn-trl <stage> --help`` is the recipe's TrlParser help: every field, with its default."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main([stage, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rlsyn-trl {stage} ")
    for flag in STAGE_FLAGS[stage]:
        assert flag in out
    assert "(default:" in out and "orl_faces/sft" in out  # defaults, and --config's packaged names


def test_run_all_help_shows_flags_with_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run-all", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--shots {1,2,3,5}" in out and "(default: 1)" in out
    assert "--mixed-precision {auto,no,bf16,fp16}" in out and "(default: auto)" in out
    assert "--threads" in out and "--recognizer-start {encoder,scratch}" in out


def test_run_all_refuses_bad_shots_at_once():
    """A fresh process refuses ``--shots 7`` with the allowed values before importing torch or datasets."""
    started = time.perf_counter()
    result = run_cli("run-all", "--shots", "7")
    elapsed = time.perf_counter() - started
    assert result.returncode == 2
    assert "shots=7 is not allowed" in result.stderr and "one of 1, 2, 3, 5" in result.stderr
    assert elapsed < 2.0, f"took {elapsed:.1f} s"
    result = run_cli("main", "--split-seed", "-1")
    assert result.returncode == 2 and "seed=-1 is not allowed" in result.stderr


def test_a_refused_stage_prints_the_refusal_without_a_traceback_unless_asked(tmp_path):
    args = ("sft", "--config", "orl_faces/sft", "--learning_rate", "-1", "--output_dir", str(tmp_path))
    refused = run_cli(*args)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "SettingsError: --learning_rate -1.0: must be > 0." in refused.stderr and "--debug" in refused.stderr
    debugged = run_cli(*args, "--debug")
    assert debugged.returncode == 1 and "Traceback (most recent call last)" in debugged.stderr
    assert "SettingsError: --learning_rate -1.0" in debugged.stderr


def test_only_the_package_own_refusals_lose_their_traceback(capsys):
    from rlsyn_trl.runtime import resolve_precision

    def refuse(argv):
        raise ValueError(f"refused {argv}")

    with pytest.raises(ValueError, match="refused"):  # raised outside rlsyn_trl: the traceback stays
        cli.run_reporting_refusals(refuse, ["--x"])
    with pytest.raises(ValueError, match="mixed_precision must be one of"):  # --debug: the package's own too
        cli.run_reporting_refusals(lambda argv: resolve_precision("fp8"), ["--debug"])
    assert cli.run_reporting_refusals(lambda argv: resolve_precision("fp8"), []) == 1
    assert "ValueError: mixed_precision must be one of" in capsys.readouterr().err
    assert cli.run_reporting_refusals(lambda argv: {"summary": 1}, []) == 0  # a recipe's summary is success


def test_run_all_takes_every_job_setting_in_both_spellings(monkeypatch, tmp_path, capsys):
    """``run-all`` is built from MainJobConfig: each field is a snake_case flag with a kebab-case alias."""
    from dataclasses import fields

    from rlsyn_trl.job import pipeline
    from rlsyn_trl.job.config import MainJobConfig
    from rlsyn_trl.utils import runtime

    jobs = []
    monkeypatch.setattr(runtime, "setup_runtime", lambda *args, **kwargs: None)
    monkeypatch.setattr(pipeline, "run_main_job", lambda config: jobs.append(config) or {"synthetic": {}})
    with pytest.raises(SystemExit):
        cli.main(["run-all", "--help"])
    flags = {word.rstrip(",") for word in capsys.readouterr().out.split() if word.startswith("--")}
    assert {f"--{field.name}" for field in fields(MainJobConfig)} <= flags
    assert {f"--{field.name.replace('_', '-')}" for field in fields(MainJobConfig)} <= flags
    base = ["run-all", "--processes", "1", "--stages", "generation"]
    assert cli.main([*base, "--output_dir", str(tmp_path / "a"), "--samples_per_identity", "3", "--no_reuse"]) == 0
    assert cli.main([*base, "--output-dir", str(tmp_path / "b"), "--samples-per-identity", "3", "--no-reuse"]) == 0
    snake, kebab = jobs
    assert (snake.samples_per_identity, snake.reuse) == (kebab.samples_per_identity, kebab.reuse) == (3, False)
    assert snake == MainJobConfig(output_dir=str(tmp_path / "a"), samples_per_identity=3, reuse=False, processes="1",
                                  stages="generation")  # fmt: skip


def test_import_and_overview_stay_light():
    code = "import sys, rlsyn_trl.cli; print(sorted({'torch', 'datasets', 'transformers'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_lazy_api_resolves():
    assert rlsyn_trl.IdentityGenerator.__name__ == "IdentityGenerator"
    assert rlsyn_trl.RLSynDDPOTrainer.__name__ == "RLSynDDPOTrainer"
    assert callable(rlsyn_trl.load_identity_dataset)
    for name in rlsyn_trl.__all__:
        assert getattr(rlsyn_trl, name) is not None
    with pytest.raises(AttributeError):
        rlsyn_trl.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("stage", ["prior", "pretrain-encoder", "sft", "ddpo", "generate", "train-recognizer"])
def test_every_recipe_has_one_command_line(stage):
    """``accelerate launch recipes/<stage>.py`` and ``rlsyn-trl <stage>`` both call the recipe's ``cli`` (and print
    a refusal the same way)."""
    recipe = importlib.import_module(f"rlsyn_trl.recipes.{cli.STAGES[stage].module}")
    assert isinstance(recipe.CONFIG_CLASSES, tuple) and callable(recipe.cli) and callable(recipe.main)
    source = Path(recipe.__file__).read_text()
    assert source.rstrip().endswith('if __name__ == "__main__":\n    sys.exit(run_reporting_refusals(cli))')


def _capture_main(monkeypatch, module):
    captured = []
    monkeypatch.setattr(module, "main", lambda *configs: captured.append(configs) or {"ok": True})
    return captured


@pytest.mark.parametrize("name", ["orl_faces/sft", "orl_faces/sft.yaml", "recipes/orl_faces/sft.yaml"])
def test_config_names_a_packaged_recipe(name, tmp_path, monkeypatch, capsys):
    """From any folder (an installed wheel), ``--config orl_faces/sft`` is the packaged YAML; flags override it."""
    from rlsyn_trl.recipes import sft

    monkeypatch.chdir(tmp_path)
    captured = _capture_main(monkeypatch, sft)
    assert cli.main(["sft", "--config", name, "--lora_rank", "4"]) == 0
    ((config,),) = captured
    recipe = yaml.safe_load((RECIPES_DIR / "orl_faces" / "sft.yaml").read_text())
    assert config.max_steps == recipe["max_steps"] and config.learning_rate == recipe["learning_rate"]
    assert config.lora_rank == 4 != recipe["lora_rank"]
    assert "{'ok': True}" in capsys.readouterr().out


def test_stage_subcommand_is_the_recipe_command_line(monkeypatch):
    """Same arguments, same configs: ``rlsyn-trl train-recognizer ...`` vs the recipe's ``cli`` (accelerate launch)."""
    from rlsyn_trl.recipes import train_recognizer

    captured = _capture_main(monkeypatch, train_recognizer)
    cli.main(["train-recognizer", "--config", "recipes/orl_faces/recognizer.yaml", "--max_steps", "7"])
    train_recognizer.cli(["--config=recipes/orl_faces/recognizer.yaml", "--max_steps", "7"])
    (script_args, config), (script_args_2, config_2) = captured
    assert script_args == script_args_2 and config.max_steps == config_2.max_steps == 7


def test_a_missing_config_lists_the_packaged_ones(monkeypatch, capsys):
    from rlsyn_trl.recipes import ddpo

    captured = _capture_main(monkeypatch, ddpo)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ddpo", "--config", "orl_faces/nope"])
    assert exit_info.value.code == 2 and not captured
    error = capsys.readouterr().err
    assert "--config orl_faces/nope: no such file" in error
    assert all(name in error for name in packaged_configs())
    assert "orl_faces/ddpo" in packaged_configs() and not any("accelerate" in name for name in packaged_configs())


def test_run_all_passes_threads_and_precision(monkeypatch, tmp_path, capsys):
    from rlsyn_trl.job import comparison, pipeline
    from rlsyn_trl.utils import runtime

    calls = {}
    monkeypatch.setattr(runtime, "setup_runtime", lambda *args, **kwargs: calls.setdefault("runtime", (args, kwargs)))
    monkeypatch.setattr(pipeline, "run_main_job", lambda config: calls.setdefault("job", config) and {})
    monkeypatch.setattr(comparison, "results_table", lambda results: "table")
    monkeypatch.setattr(comparison, "job_summary", lambda results: "summary")
    argv = ["run-all", "--output-dir", str(tmp_path), "--threads", "2", "--mixed-precision", "bf16", "--shots", "2",
            "--reference-strengths", "0.4", "0.8", "--processes", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    args, kwargs = calls["runtime"]
    assert kwargs["threads"] == 2 and kwargs["mixed_precision"] == "bf16" and kwargs["offline"]
    job = calls["job"]
    assert (job.mixed_precision, job.shots, job.output_dir) == ("bf16", 2, str(tmp_path))
    assert job.reference_strengths == [0.4, 0.8]
    assert capsys.readouterr().out.split() == ["table", "summary"]
    with pytest.raises(SystemExit):
        cli.main(["run-all", "--output-dir", str(tmp_path / "bad"), "--reference-strengths", "1.5"])
    assert "--reference_strengths 1.5: must be a strength in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_job_precision_reaches_every_stage(precision, tmp_path):
    from rlsyn_trl.job.comparison import recognizer_config, recognizer_precision
    from rlsyn_trl.job.pipeline import MainJobConfig, cold_start_settings, ddpo_settings
    from rlsyn_trl.trainers import ColdStartConfig, RLSynDDPOConfig

    job = MainJobConfig(output_dir=str(tmp_path), mixed_precision=precision)
    sft = ColdStartConfig(**cold_start_settings(job, tmp_path / "sft"))
    ddpo = RLSynDDPOConfig(**ddpo_settings(job, tmp_path / "sft", tmp_path / "ddpo"))
    assert sft.mixed_precision == ddpo.mixed_precision == precision
    recognizer = recognizer_config(tmp_path, "resnet-tiny", 5, 0, **recognizer_precision(precision))
    assert recognizer.bf16 is (precision == "bf16") and not recognizer.fp16
    auto = MainJobConfig(output_dir=str(tmp_path))
    assert cold_start_settings(auto, tmp_path)["mixed_precision"] == "auto" and recognizer_precision("auto") == {}
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        MainJobConfig(mixed_precision="fp8")


NOTICE = (
    "`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil` for backward "
    "compatibility. Install torchvision to use the default backend, or import `CLIPImageProcessorPil` directly to "
    "silence this warning."
)


def test_torchvision_fallback_notice_is_dropped_and_nothing_else():
    logger = logging.getLogger(TORCHVISION_FALLBACK_LOGGER)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        logger.warning(NOTICE)
        logger.warning("Could not import module 'X'.")
        logging.getLogger("transformers.other").warning(NOTICE)  # another logger: untouched
    finally:
        logger.removeHandler(handler)
    assert [record.getMessage() for record in records] == ["Could not import module 'X'."]


def test_torchvision_fallback_notice_is_silent_in_a_real_import():
    """transformers logs the notice while diffusers imports its pipelines; ``import rlsyn_trl`` first keeps it out."""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = "import transformers; transformers.CLIPImageProcessor; transformers.SiglipImageProcessor"
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    quiet = subprocess.run(
        [sys.executable, "-c", "import rlsyn_trl; " + code], capture_output=True, text=True, env=env, timeout=120
    )
    assert bare.returncode == quiet.returncode == 0, bare.stderr + quiet.stderr
    if importlib.util.find_spec("torchvision") is None:
        assert "requires torchvision (not installed)" in bare.stderr  # the notice this filter is for still exists
    assert "requires torchvision" not in quiet.stderr
