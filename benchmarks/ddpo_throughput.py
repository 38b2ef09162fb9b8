"""Samples per second of RLSynDDPOTrainer against TRL's stock DDPOTrainer, same tiny pipeline, same config.

    nice -n 5 python benchmarks/ddpo_throughput.py [--epochs 20] [--steps 4]

Both trainers drive an ``IdentityDDPOPipeline`` over identical tiny DiTs (16x16, width 32, depth 2, patch 4) and
the same composite reward (a tiny encoder, memory bank of private ORL images); the stock trainer scores each sample
batch (its prompt function draws whole identity groups so the set-level terms exist), ours the gathered epoch.
Epochs of the trainers alternate (order flipped every round) so background load hits them alike; medians are
reported, per wall-clock second and per CPU second of this process (one torch thread): on a shared machine the wall
clock also measures the neighbours, the CPU clock only the trainer's own work. A third row adds our anchors (KL +
denoising), which cost extra passes by design and are not part of the comparison.
Pass criteria: samples/s ratio ours/stock >= 0.95, reward time <= 5% of the epoch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from trl import DDPOConfig, DDPOTrainer  # noqa: E402

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset  # noqa: E402
from rlsyn_trl.encoders import IdentityEncoder, IdentityEncoderConfig  # noqa: E402
from rlsyn_trl.generators import IdentityGenerator, build_pixel_dit, default_scheduler  # noqa: E402
from rlsyn_trl.trainers import (  # noqa: E402
    IdentityDDPOPipeline,
    IdentityReward,
    RLSynDDPOConfig,
    RLSynDDPOTrainer,
    identity_prompt_fn,
)
from rlsyn_trl.utils.runtime import setup_runtime  # noqa: E402

RESOLUTION = 16
IDENTITIES = 8
GROUP = 4


def tiny_pipeline(names: list[str]) -> IdentityDDPOPipeline:
    """The same weights every call (seeded), so both trainers start from one policy."""
    torch.manual_seed(0)
    transformer = build_pixel_dit(len(names), resolution=RESOLUTION, width=32, depth=2, heads=2, patch_size=4)
    for parameter in transformer.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    generator = IdentityGenerator(transformer, default_scheduler(), names)
    return IdentityDDPOPipeline(generator, "tiny", lora_config=RLSynDDPOConfig(lora_rank=4).lora_config())


class TimedReward:
    """The stock trainer's reward function with its wall time accumulated."""

    def __init__(self, reward: IdentityReward):
        self.reward = reward
        self.seconds = 0.0

    def __call__(self, *args):
        started = time.perf_counter()
        result = self.reward(*args)
        self.seconds += time.perf_counter() - started
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs per trainer (after one warm-up epoch)")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps per sample")
    args = parser.parse_args()
    setup_runtime(mixed_precision="no", threads=1)  # the trainers below run fp32 on the CPU
    PartialState(cpu=True)

    data = load_identity_dataset("orl_faces", "private", shots=2, seed=0)["train"]
    images, labels = dataset_to_tensors(data, RESOLUTION)
    keep = labels < IDENTITIES
    images, labels = images[keep], labels[keep]
    names = data.features["label"].names[:IDENTITIES]
    torch.manual_seed(0)
    encoder = IdentityEncoder(IdentityEncoderConfig(image_size=RESOLUTION, widths=[8, 16], embedding_size=16)).eval()
    reward = IdentityReward.build(encoder, images, labels, names)

    shared = {
        "mixed_precision": "no",
        "sample_num_steps": args.steps,
        "sample_guidance_scale": 2.0,
        "sample_eta": 1.0,
        "train_timestep_fraction": 1.0,  # the stock default; ours defaults to 0.9 (its final step is skipped)
        "sample_batch_size": 16,
        "sample_num_batches_per_epoch": IDENTITIES * GROUP // 16,
        "train_batch_size": 8,
        "train_learning_rate": 1e-4,
        "num_epochs": 10**6,
        "save_freq": 10**6,
    }
    with tempfile.TemporaryDirectory() as folder:
        trainers = {}
        stock_reward = TimedReward(reward)
        stock = DDPOTrainer(DDPOConfig(**shared), stock_reward, identity_prompt_fn(names, GROUP), tiny_pipeline(names))
        trainers["stock DDPOTrainer"] = stock
        for name, anchors in (
            ("RLSynDDPOTrainer", {}),
            ("RLSynDDPOTrainer + anchors", {"kl_coef": 0.1, "denoise_coef": 0.1}),
        ):
            config = RLSynDDPOConfig(
                **shared,
                **anchors,
                train_skip_final_steps=0,  # train every step, as the stock trainer does
                output_dir=os.path.join(folder, name.replace(" ", "_")),
                identities_per_epoch=IDENTITIES,
                samples_per_identity=GROUP,
            )
            trainers[name] = RLSynDDPOTrainer(config, tiny_pipeline(names), reward, (images, labels))

        times = {name: [] for name in trainers}
        cpu_times = {name: [] for name in trainers}
        reward_times = {name: [] for name in trainers}
        steps = dict.fromkeys(trainers, 0)
        for epoch in range(args.epochs + 1):
            order = list(trainers) if epoch % 2 else list(reversed(trainers))  # neither always runs first
            for name in order:
                trainer = trainers[name]
                before = stock_reward.seconds
                started, cpu_started = time.perf_counter(), time.process_time()
                steps[name] = trainer.step(epoch, steps[name])
                elapsed, cpu_elapsed = time.perf_counter() - started, time.process_time() - cpu_started
                if epoch == 0:
                    continue  # warm-up
                times[name].append(elapsed)
                cpu_times[name].append(cpu_elapsed)
                if trainer is stock:
                    reward_times[name].append(stock_reward.seconds - before)
                else:
                    reward_times[name].append(trainer.history[-1]["time/reward_s"])

    samples = IDENTITIES * GROUP
    rate = {name: samples / statistics.median(values) for name, values in times.items()}
    cpu_rate = {name: samples / statistics.median(values) for name, values in cpu_times.items()}
    stock_name, ours = "stock DDPOTrainer", "RLSynDDPOTrainer"
    print(f"\n{samples} samples/epoch, {args.steps} DDIM steps, {args.epochs} timed epochs (median), 1 thread\n")
    columns = ["samples/s (wall)", "samples/s (CPU)", "epoch s (wall)", "reward s", "reward share", "ratio wall"]
    print("| trainer | " + " | ".join(columns) + " | ratio CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in trainers:
        epoch_s, reward_s = statistics.median(times[name]), statistics.median(reward_times[name])
        print(
            f"| {name} | {rate[name]:.1f} | {cpu_rate[name]:.1f} | {epoch_s:.3f} | {reward_s:.4f} | "
            f"{reward_s / epoch_s:.1%} | {rate[name] / rate[stock_name]:.3f} | "
            f"{cpu_rate[name] / cpu_rate[stock_name]:.3f} |"
        )
    ratio = min(rate[ours] / rate[stock_name], cpu_rate[ours] / cpu_rate[stock_name])
    share = statistics.median(reward_times[ours]) / statistics.median(times[ours])
    print(
        f"\nratio {ours} / stock (the lower of wall and CPU) = {ratio:.3f} ({'PASS' if ratio >= 0.95 else 'FAIL'} "
        f">= 0.95); reward share = {share:.1%} ({'PASS' if share <= 0.05 else 'FAIL'} <= 5%)"
    )


if __name__ == "__main__":
    main()
