import subprocess
import sys

import pytest

from rlsyn_trl import cli
from rlsyn_trl.utils import launch


@pytest.mark.parametrize(
    ("cuda", "cores", "expected"),
    [(True, 16, 1), (False, 1, 1), (False, 2, 2), (False, 16, launch.MAX_EMBEDDED_PROCESSES)],
)
def test_default_processes_follow_the_machine(cuda, cores, expected):
    assert launch.default_processes(cuda, cores) == expected


def test_processes_share_the_cores(monkeypatch):
    monkeypatch.setattr(launch, "available_cores", lambda: 8)
    assert launch.resolve_processes(2, None) == (2, 4)
    assert launch.resolve_processes(2, 1) == (2, 1)  # the user's threads per process win
    assert launch.resolve_processes(1, None) == (1, None)  # one process: torch's own choice, as before


def test_launch_command_starts_cpu_processes_of_the_same_command(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    command = launch.launch_command(["run-all", "--quick"], 2)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "2" and "--multi_gpu" in command
    assert 0 < int(command[command.index("--main_process_port") + 1]) < 65536
    assert command[-4:] == ["-m", "rlsyn_trl.cli", "run-all", "--quick"]
    environment = launch.launch_environment(1, use_cpu=True)
    assert environment["ACCELERATE_USE_CPU"] == "1" and environment["OMP_NUM_THREADS"] == "1"
    assert "ACCELERATE_USE_CPU" not in launch.launch_environment(None, use_cpu=False)


def test_run_all_launches_the_generative_stages_then_trains_the_rows_here(monkeypatch, tmp_path, capsys):
    from rlsyn_trl.job import comparison, pipeline
    from rlsyn_trl.utils import runtime

    calls, jobs = [], []
    monkeypatch.setattr(subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.setattr(launch, "available_cores", lambda: 2)
    monkeypatch.setattr(runtime, "setup_runtime", lambda *args, **kwargs: None)
    monkeypatch.setattr(pipeline, "run_main_job", lambda config: jobs.append(config) or {})
    monkeypatch.setattr(comparison, "results_table", lambda results: "table")
    monkeypatch.setattr(comparison, "job_summary", lambda results: "summary")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["run-all", "--output-dir", str(tmp_path), "--processes", "2"]
    assert cli.main(argv) == 0
    ((command, env),) = calls
    assert command[-len(argv) - 4 :] == [*argv, "--processes", "2", "--stages", "generation"]
    assert env["OMP_NUM_THREADS"] == "1" and env["ACCELERATE_USE_CPU"] == "1"
    ((job,),) = [jobs]  # then the rows, in this process
    assert (job.stages, job.recognizer_workers) == ("recognizers", 1)
    assert capsys.readouterr().out.split()[-2:] == ["table", "summary"]

    # --stages generation stops after the group; a failed group is reported and nothing else runs.
    assert cli.main([*argv, "--stages", "generation"]) == 0 and len(jobs) == 1
    monkeypatch.setattr(subprocess, "call", lambda command, env: 3)
    assert cli.main(argv) == 3 and len(jobs) == 1


def test_a_launched_process_runs_the_job_and_only_rank_zero_reports(monkeypatch, tmp_path, capsys):
    from rlsyn_trl.job import comparison, pipeline
    from rlsyn_trl.utils import runtime

    monkeypatch.setattr(subprocess, "call", lambda *args, **kwargs: pytest.fail("launched twice"))
    monkeypatch.setattr(runtime, "setup_runtime", lambda *args, **kwargs: None)
    monkeypatch.setattr(pipeline, "run_main_job", lambda config: {})
    monkeypatch.setattr(comparison, "results_table", lambda results: "table")
    monkeypatch.setattr(comparison, "job_summary", lambda results: "summary")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, printed in (("1", []), ("0", ["table", "summary"])):
        monkeypatch.setenv("RANK", rank)
        assert cli.main(["run-all", "--output-dir", str(tmp_path), "--processes", "2"]) == 0
        assert capsys.readouterr().out.split() == printed


def test_too_many_processes_are_refused_at_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run-all", "--processes", "3"])
    assert "at most 2 processes" in capsys.readouterr().err
