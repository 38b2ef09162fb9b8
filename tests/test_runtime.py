import logging

import pytest
import torch
from accelerate import Accelerator

from rlsyn_trl.utils import runtime

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"fma", "avx", "avx2"}, "no"),  # AVX2-only: bf16 autocast is emulated and about 10x slower than fp32
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
        ({"avx2", "amx_tile", "amx_bf16"}, "bf16"),
    ],
)
def test_auto_precision_follows_the_cpu(monkeypatch, flags, expected):
    monkeypatch.delenv(runtime.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags))
    assert runtime.resolve_precision("auto", "cpu") == expected
    assert runtime.resolve_precision(None, "cpu") == expected
    assert runtime.resolve_precision("no", "cpu") == "no" and runtime.resolve_precision("bf16", "cpu") == "bf16"


def test_auto_precision_on_a_gpu(monkeypatch):
    monkeypatch.delenv(runtime.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert runtime.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert runtime.resolve_precision("auto", "cuda") == "no"


@pytest.mark.parametrize("value, native, precision", [("1", True, "bf16"), ("0", False, "no"), ("true", True, "bf16")])
def test_the_probe_can_be_forced_either_way(monkeypatch, caplog, value, native, precision):
    """RLSYN_TRL_NATIVE_BF16 makes an AVX2 machine take the bf16 path (and a bf16 machine the fp32 one), logged."""
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"} if native else {"avx512_bf16"}))
    monkeypatch.setenv(runtime.NATIVE_BF16_ENV, value)
    assert runtime.native_bf16("cpu") is native and runtime.resolve_precision("auto", "cpu") == precision
    assert runtime.resolve_precision("no", "cpu") == "no"  # an explicit setting is never overridden
    with caplog.at_level(logging.INFO, logger="rlsyn_trl.utils.runtime"):
        assert runtime.setup_runtime(mixed_precision="auto").mixed_precision == precision
    assert f"forced by {runtime.NATIVE_BF16_ENV}" in caplog.text
    monkeypatch.setenv(runtime.NATIVE_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match="RLSYN_TRL_NATIVE_BF16 must be 1 or 0"):
        runtime.resolve_precision("auto", "cpu")


def test_a_second_precision_in_one_process_is_refused_with_the_fix(fresh_accelerate_state):
    assert runtime.claim_process_precision("bf16") == "bf16"  # nothing built yet: any precision is free
    Accelerator(cpu=True, mixed_precision="bf16")
    assert runtime.claim_process_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match=r"mixed_precision='no' resolves to 'no', but this process already runs under "
                                         r"'bf16'.*--mixed_precision bf16"):  # fmt: skip
        runtime.claim_process_precision("no")


def test_a_bad_precision_names_the_setting():
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        runtime.resolve_precision("fp8")


def test_setup_runtime_logs_its_choice_and_stages_share_one_accelerate_state(caplog, monkeypatch):
    monkeypatch.delenv(runtime.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))
    with caplog.at_level(logging.INFO, logger="rlsyn_trl.utils.runtime"):
        chosen = runtime.setup_runtime(seed=3, mixed_precision="auto")
    assert chosen.mixed_precision == "no" and "native bf16 not found" in caplog.text
    assert chosen.keeps_freed_memory == ("freed memory kept for reuse" in caplog.text)
    assert torch.get_num_threads() == chosen.threads
    # Every stage of a process asks for the same precision, so accelerate's per-process state accepts them all.
    for _ in range(2):
        assert Accelerator(cpu=True, mixed_precision=chosen.mixed_precision).mixed_precision == "no"


@pytest.fixture
def tf32_flags():
    """TF32 switches off, restored after the test (they are process-wide; monkeypatch cannot set torch's cuBLAS one)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tf32_is_allowed_on_gpus_for_training_and_refused_inside_the_audit(monkeypatch, tf32_flags):
    from rlsyn_trl.generation import audit

    runtime.setup_runtime()
    assert not torch.cuda.is_available() and not torch.backends.cuda.matmul.allow_tf32  # a CPU run changes nothing
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    runtime.setup_runtime()
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    seen = []
    addmm = torch.addmm

    def recording_addmm(*args, **kwargs):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return addmm(*args, **kwargs)

    monkeypatch.setattr(torch, "addmm", recording_addmm)
    rows = torch.randn(3, 8)
    assert audit.feature_distances(rows, rows).diagonal().eq(0).all()
    assert seen == [False] and torch.backends.cuda.matmul.allow_tf32  # off for the distances, restored after


FAULT_PROBE = """
import resource, sys, torch
from rlsyn_trl.utils.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
x = torch.ones(16 * 2**20)  # 64 MB: above glibc's largest default mmap threshold (32 MB)
faults = []
for _ in range(25):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x * 2
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, *faults[1:])  # the first result faults in either way
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="the allocator setting is glibc's (Linux)")
def test_freed_activations_are_reused_instead_of_page_faulted_in_again(monkeypatch):
    import statistics
    import subprocess
    import sys

    def faults_per_result(keep: bool) -> tuple[str, list[int]]:
        output = subprocess.run([sys.executable, "-c", FAULT_PROBE, str(int(keep))], capture_output=True, text=True)
        applied, *counts = output.stdout.split()
        return applied, [int(count) for count in counts]

    (default_applied, default_faults), (kept_applied, kept_faults) = faults_per_result(False), faults_per_result(True)
    assert (default_applied, kept_applied) == ("False", "True")
    result_pages = 16 * 2**20 * 4 // 4096
    assert min(default_faults) > result_pages // 2  # without the setting every 64 MB result is faulted in again
    # With it, results reuse freed memory. While the heap settles, an early freed block can be a few bytes short of
    # the next result, which then extends the heap (0 to 6 of 24 results, in 180 runs at 1 and 2 threads): most reuse.
    assert statistics.median(kept_faults) < result_pages // 20, kept_faults

    calls = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(True) or True)
    assert runtime.setup_runtime().keeps_freed_memory and calls == [True]  # every entry point gets it on a CPU


def test_stages_read_the_precision_setup_runtime_resolved(monkeypatch, fresh_accelerate_state):
    """auto is decided once, by setup_runtime; the job and the trainers read that answer instead of probing again."""
    monkeypatch.delenv(runtime.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert runtime.setup_runtime(mixed_precision="auto").mixed_precision == "bf16"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))  # a second probe would now say fp32
    assert runtime.process_precision("auto") == runtime.process_precision(None) == "bf16"
    assert runtime.claim_process_precision("auto") == "bf16"
    assert runtime.process_precision("no") == "no"  # an explicit precision is never replaced
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        runtime.process_precision("fp8")
