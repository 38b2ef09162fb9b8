"""The shared training loop under data parallelism: global batches split per process, per-process noise, identical
weights, a time budget decided together, one writer; and the set-ups it refuses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlsyn_trl.trainers.training import check_data_parallel, local_batch_size, process_seed, sample_batches

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

HELPER = Path(__file__).with_name("data_parallel_processes.py")


def test_processes_split_the_global_batch_one_process_would_draw():
    images, labels = torch.arange(10.0)[:, None], torch.arange(10)
    single = sample_batches(images, labels, 6, seed=3)
    shares = [sample_batches(images, labels, 6, 3, process_index=rank, num_processes=3) for rank in range(3)]
    for step in range(5):  # past one pass over the data
        parts = [share(step) for share in shares]
        assert all(len(x) == 2 for x, _ in parts)
        assert torch.equal(torch.cat([x for x, _ in parts]), single(step)[0])
        assert torch.equal(torch.cat([y for _, y in parts]), single(step)[1])


def test_a_global_batch_the_processes_cannot_share_is_refused_with_the_fix():
    assert local_batch_size(64, 8) == 8
    with pytest.raises(ValueError, match=r"--generator_batch_size 30 is the global batch.*generator_batch_size 24"):
        local_batch_size(30, 8, "generator_batch_size")
    with pytest.raises(ValueError, match="--batch_size 6 is the global batch"):
        sample_batches(torch.zeros(4, 1), torch.zeros(4), 6, 0, 0, 4)


def test_process_seeds_keep_the_run_seed_on_process_zero_and_differ_elsewhere():
    assert process_seed(7, 0) == 7
    assert len({process_seed(7, rank) for rank in range(8)}) == 8


@pytest.mark.parametrize("flag, name", [("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP")])
def test_sharded_launches_are_refused_before_any_work(monkeypatch, flag, name):
    check_data_parallel()
    monkeypatch.setenv(flag, "true")
    with pytest.raises(ValueError, match=f"data parallel \\(DDP\\) only, not {name}.*ddp.yaml"):
        check_data_parallel()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """accelerate 1.15's `launch --cpu --num_processes 2` starts ONE process; --multi_gpu + ACCELERATE_USE_CPU=1 two.

    The subprocess timeout is what catches a hang (a process waiting for another that stopped).
    """
    output = tmp_path_factory.mktemp("data_parallel")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HELPER.parents[1]), env.get("PYTHONPATH", "")])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    subprocess.run([*launch, str(HELPER), str(output)], env=env, check=True, timeout=300, capture_output=True)
    loaded = [torch.load(output / f"rank{rank}.pt") for rank in (0, 1)]
    assert [rank["num_processes"] for rank in loaded] == [2, 2]
    return loaded


PHASES = ["cold_start/batch_size", "prior/encoder_batch_size", "prior/generator_batch_size"]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("phase", PHASES)
def test_processes_train_on_different_halves_of_each_global_batch(ranks, phase):
    first, second = (rank["batches"][phase] for rank in ranks)
    single = sample_batches(first["images"], first["labels"], first["batch_size"], first["seed"])
    assert len(first["steps"]) == len(second["steps"]) > 1
    for (step, x0, y0), (step1, x1, y1) in zip(first["steps"], second["steps"]):
        assert step == step1 and len(x0) == len(x1) == first["batch_size"] // 2
        assert not torch.equal(x0, x1)
        x, y = single(step)
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_processes_draw_their_own_noise_and_timesteps(ranks):
    first, second = (rank["probes"] for rank in ranks)
    assert len(first) == len(second) == 3
    assert all(not torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_processes_end_with_identical_trained_weights(ranks):
    first, second = ranks
    models = {
        "cold start": (first["cold_start"], second["cold_start"]),
        "prior encoder": (first["prior"]["encoder"], second["prior"]["encoder"]),
        "prior generator": (first["prior"]["generator"], second["prior"]["generator"]),
    }
    for model, (a, b) in models.items():
        assert a.keys() == b.keys() and a, model
        for name in a:
            assert torch.equal(a[name], b[name]), (model, name)
    embedders = [value for name, value in first["cold_start"].items() if "class_embedder" in name]
    assert embedders and all(torch.count_nonzero(value) for value in embedders)  # trained away from zero


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_time_budget_running_out_on_one_process_stops_both(ranks):
    """Rank 1's budget runs out after the first step, rank 0's never: both stop there (and the launch returned)."""
    assert [rank["budget_steps"] for rank in ranks] == [1, 1]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_recognizer_splits_its_global_batch_over_the_processes(ranks):
    assert [rank["recognizer_batch"] for rank in ranks] == [4, 4]  # global_batch_size 8 on 2 processes


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_recognizer_with_selection_writes_its_scored_dataset_once(ranks):
    import datasets

    first, second = (rank["writes"] for rank in ranks)
    assert len(first) == 1 and second == []
    scored = datasets.load_from_disk(first[0])
    assert {"utility", "selection_weight"} <= set(scored.column_names)


def test_checkpoints_are_saved_and_resumed_without_accelerate_chatter(tmp_path, caplog):
    """accelerate logs five INFO lines per save_state; the loop keeps them out of the run's log, warnings still pass."""
    import logging

    from accelerate import Accelerator

    from rlsyn_trl.trainers.training import run_training_phase, warmup_cosine

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler = warmup_cosine(optimizer, 1, 4)

    def loss(step):
        return model(torch.ones(1, 2)).pow(2).sum()

    with caplog.at_level(logging.INFO):
        assert run_training_phase(accelerator, "toy", model, loss, optimizer, scheduler, 4, tmp_path, 2, False) == 4
        assert run_training_phase(accelerator, "toy", model, loss, optimizer, scheduler, 4, tmp_path, 2, True) == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step-2", "step-4"]
    assert "Resumed toy" in caplog.text
    assert not [record for record in caplog.records if record.name.startswith("accelerate")]
    assert logging.getLogger("accelerate.checkpointing").level == logging.NOTSET  # restored
