"""Helper of ``test_training.py``: tiny cold start, prior and recognizer runs, each rank saving what it saw.

accelerate launch --multi_gpu --num_processes 2 tests/data_parallel_processes.py OUTPUT   (ACCELERATE_USE_CPU=1)

Writes ``OUTPUT/rank{r}.pt``: the raw batches each phase drew, a probe of the random stream before every denoising
loss, the trained weights, the steps a time budget that runs out on rank 1 only let each rank do, and the paths the
recognizer with selection wrote.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator, PartialState  # noqa: E402
from conftest import build_tiny_generator  # noqa: E402
from PIL import Image  # noqa: E402

import rlsyn_trl.trainers.cold_start as cold_start  # noqa: E402
import rlsyn_trl.trainers.priors as priors  # noqa: E402
from rlsyn_trl.generators import IdentityGenerator  # noqa: E402
from rlsyn_trl.generators.adapter import freeze_backbone, replace_class_embedders  # noqa: E402
from rlsyn_trl.utils.runtime import claim_process_precision  # noqa: E402

NAMES = ["a", "b", "c", "d"]
BATCHES: dict[str, dict] = {}
PROBES: list[torch.Tensor] = []
WRITES: list[str] = []
MEMORY_PROBE: list[bool] = []


def tiny_split(images_per_identity: int = 3, size: int = 16) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    pictures = [
        Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)) for _ in NAMES * images_per_identity
    ]
    labels = [index for index in range(len(NAMES)) for _ in range(images_per_identity)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    return datasets.Dataset.from_dict({"image": pictures, "label": labels}, features=features)


def recording(phase: str, sample_batches):
    """``sample_batches`` that keeps, under ``phase/setting``, its inputs and every batch it draws."""

    def wrapped(images, labels, batch_size, seed, process_index, num_processes, setting="batch_size"):
        draw = sample_batches(images, labels, batch_size, seed, process_index, num_processes, setting)
        record = {"images": images, "labels": labels, "batch_size": batch_size, "seed": seed, "steps": []}
        BATCHES[f"{phase}/{setting}"] = record

        def batch(step):
            x, y = draw(step)
            record["steps"].append((step, x.clone(), y.clone()))
            return x, y

        return batch

    return wrapped


def probe_then_denoise(original):
    def denoising_loss(self, *args, **kwargs):
        if not MEMORY_PROBE:  # the cold start's memory check before its first step is not a training step
            with torch.random.fork_rng(devices=[]):  # what the next draws (noise, timesteps, drops) will be
                PROBES.append(torch.rand(8))
        return original(self, *args, **kwargs)

    return denoising_loss


def flagged_memory_probe(original):
    def probe_loss(self, samples):
        MEMORY_PROBE.append(True)
        try:
            return original(self, samples)
        finally:
            MEMORY_PROBE.clear()

    return probe_loss


def trainable(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


def run_cold_start(output: str, rank: int, **overrides) -> cold_start.ColdStartTrainer:
    generator = build_tiny_generator(resolution=16)
    replace_class_embedders(generator, NAMES)
    freeze_backbone(generator)
    settings = dict(output_dir=output, max_steps=3, batch_size=4, warmup_steps=1, learning_rate=1e-2, seed=0)
    config = cold_start.ColdStartConfig(**{**settings, **overrides})
    trainer = cold_start.ColdStartTrainer(generator, tiny_split(), config)
    trainer.train()
    return trainer


def run_prior(output: str) -> dict[str, torch.Tensor]:
    config = priors.PriorConfig(
        output_dir=output, resolution=16, width=16, depth=1, heads=2, patch_size=4, generator_steps=3,
        generator_batch_size=4, warmup_steps=1, use_lfw_faces=False, encoder_widths=[8], embedding_size=8,
        encoder_steps=2, encoder_batch_size=4, checkpoint_every=100, seed=0,
    )  # fmt: skip
    accelerator = Accelerator(mixed_precision=claim_process_precision(config.mixed_precision))  # as the recipe
    images = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(4).repeat_interleave(3)
    encoder = priors.train_encoder(config, accelerator, images, labels, len(NAMES))
    generator = priors.train_generator(config, accelerator, images, labels, NAMES)
    return {"encoder": trainable(encoder.model), "generator": trainable(generator.model.transformer)}


def run_recognizer(output: str) -> int:
    from rlsyn_trl.recognizer import RecognizerConfig, train_recognizer

    original = datasets.Dataset.save_to_disk

    def save_to_disk(self, path, *args, **kwargs):
        WRITES.append(str(path))
        return original(self, path, *args, **kwargs)

    datasets.Dataset.save_to_disk = save_to_disk
    real = datasets.DatasetDict(train=tiny_split(2), test=tiny_split(1))
    config = RecognizerConfig(
        output_dir=output, max_steps=4, global_batch_size=8, selection=True, round_every=2,
        candidates_per_round=4, real_per_round=4, scored_dataset_path=os.path.join(output, "scored"),
        resolution=[16], report_to="none", disable_tqdm=True, logging_steps=1000, use_cpu=True,
    )  # fmt: skip
    train_recognizer(config, real, tiny_split(2))
    return config.per_device_train_batch_size


def main(output: str) -> None:
    torch.set_num_threads(1)
    rank = PartialState(cpu=True).process_index  # a bare PartialState() would pin one process on CPU
    cold_start.sample_batches = recording("cold_start", cold_start.sample_batches)
    priors.sample_batches = recording("prior", priors.sample_batches)
    IdentityGenerator.denoising_loss = probe_then_denoise(IdentityGenerator.denoising_loss)
    cold_start.ColdStartTrainer.probe_loss = flagged_memory_probe(cold_start.ColdStartTrainer.probe_loss)

    trainer = run_cold_start(os.path.join(output, "sft"), rank)
    cold_start_weights = trainable(trainer.generator.transformer)
    probes = list(PROBES)
    batches = dict(BATCHES)
    # A time budget that runs out on rank 1 only (its clock is ahead): both must stop at the same step, no hang.
    budget = run_cold_start(os.path.join(output, "budget"), rank, max_steps=50, max_minutes=1e-9 if rank else 1e3)
    prior_weights = run_prior(os.path.join(output, "prior"))
    batches.update({key: value for key, value in BATCHES.items() if key.startswith("prior")})
    recognizer_batch = run_recognizer(os.path.join(output, "recognizer"))
    torch.save(
        {
            "num_processes": PartialState().num_processes,
            "batches": batches,
            "probes": probes,
            "cold_start": cold_start_weights,
            "prior": prior_weights,
            "budget_steps": budget.steps_done,
            "writes": WRITES,
            "recognizer_batch": recognizer_batch,
        },
        os.path.join(output, f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    main(sys.argv[1])
