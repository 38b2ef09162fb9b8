"""Run the end-to-end job as data-parallel CPU processes, one per core, through accelerate's launcher.

Why: on a CPU the generator's and recognizers' small matrix products scale poorly across threads. A cold-start step
of the embedded default takes 1.75 s with 2 threads and 1.86 s with 1 thread while another job holds the second
core, so a second thread buys 6%. Two processes of one thread each, splitting every global batch (the stages are
data-parallel: :mod:`rlsyn_trl.trainers.training`, the DDPO trainer, generation shards), use both cores with the same
global batches and step counts. The choice is per machine: :func:`default_processes`.

``rlsyn-trl run-all`` calls :func:`relaunch` when it is asked for more than one process and is not yet inside a
launched process group; the launched processes run the same command line and find ``WORLD_SIZE`` set. Inside a
group, :func:`local_batch_size` is each process's share of a global batch (every stage and the recognizer use it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

# The embedded DDPO layout (identities_per_epoch x samples_per_identity over sample_batch_size) divides among at
# most two processes; recipes/orl_faces/ddpo.yaml says so next to the setting.
MAX_EMBEDDED_PROCESSES = 2
# The precisions a stage runs in: accelerate's mixed_precision values, and auto (bf16 where the device computes it
# natively, resolved once per process by rlsyn_trl.utils.runtime.setup_runtime).
PRECISIONS = ("auto", "no", "bf16", "fp16")


def check_precision(requested: str) -> None:
    """Refuse a precision no stage runs in, before anything is loaded."""
    if requested not in PRECISIONS:
        raise ValueError(
            f"mixed_precision must be one of {PRECISIONS}, got {requested!r}. Use 'auto' to let the device decide "
            "(quote it in YAML: a bare `no` is the boolean false)."
        )


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def prefer_offline() -> None:
    """Work offline unless the user said otherwise (the embedded job). huggingface_hub and datasets read these
    variables when first imported, so call this before anything imports them."""
    for variable in OFFLINE_VARIABLES:
        os.environ.setdefault(variable, "1")


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_processes(cuda_available: bool, cores: int) -> int:
    """``--processes auto``: one process on a GPU machine, else one per core up to the embedded layout's maximum."""
    if cuda_available:
        return 1
    return max(1, min(cores, MAX_EMBEDDED_PROCESSES))


def resolve_processes(requested: str | int, threads: int | None) -> tuple[int, int | None]:
    """(processes, threads per process) for ``--processes`` / ``--threads``: each process gets its share of cores."""
    if requested == "auto":
        import torch

        processes = default_processes(torch.cuda.is_available(), available_cores())
    else:
        processes = int(requested)
    if processes > 1 and threads is None:
        threads = max(1, available_cores() // processes)
    return processes, threads


def local_batch_size(batch_size: int, num_processes: int, setting: str = "batch_size") -> int:
    """Each process's share of a global batch; a clear error when the processes cannot share it evenly."""
    if batch_size % num_processes:
        lower = max(num_processes, batch_size - batch_size % num_processes)
        raise ValueError(
            f"--{setting} {batch_size} is the global batch, shared by {num_processes} processes, and must be a "
            f"multiple of their number: use --{setting} {lower} or {lower + num_processes}, or another process count."
        )
    return batch_size // num_processes


def launched() -> bool:
    """Whether this process is one of a launched group (torchrun and accelerate set ``WORLD_SIZE``)."""
    return "WORLD_SIZE" in os.environ


def free_port() -> int:
    """A TCP port free on this machine now, for the group's rendezvous (two jobs on one machine must not share)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(argv: list[str], processes: int) -> list[str]:
    """``accelerate launch`` of ``python -m rlsyn_trl.cli argv`` as ``processes`` CPU processes on this machine.

    accelerate (1.x) starts one process for ``--cpu --num_processes N``; ``--multi_gpu`` with ``ACCELERATE_USE_CPU=1``
    (:func:`launch_environment`) starts N CPU processes joined by gloo.
    """
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(free_port()),
        "--mixed_precision",
        "no",  # the launcher's default only; every stage passes its own resolved precision
        "--dynamo_backend",
        "no",
        "-m",
        "rlsyn_trl.cli",
        *argv,
    ]


def is_main_process() -> bool:
    """Rank 0 of a launched group, or a process on its own: the one that prints and writes the job's results."""
    return int(os.environ.get("RANK", "0")) == 0


def launch_environment(threads: int | None, use_cpu: bool) -> dict[str, str]:
    """The launched processes' environment: CPU processes (gloo) unless GPUs carry the job; threads per process."""
    environment = dict(os.environ)
    if use_cpu:
        environment["ACCELERATE_USE_CPU"] = "1"
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    return environment


def relaunch(argv: list[str], processes: int, threads: int | None) -> int:
    """Run ``rlsyn-trl argv`` as ``processes`` data-parallel processes; returns the group's exit status."""
    import torch

    use_cpu = not torch.cuda.is_available()
    where = f"CPU processes of {threads or 'default'} thread(s) each" if use_cpu else "GPU processes"
    print(f"Launching {processes} data-parallel {where} (accelerate launch; --processes 1 runs in this process)")
    return subprocess.call(launch_command(argv, processes), env=launch_environment(threads, use_cpu))
