"""The three CPU speed-ups of the embedded default, each against its baseline in the same run.

    python benchmarks/cpu_speedups.py [--threads 1] [--repeats 3]

1. Sampling with LoRA merged: ``IdentityGenerator.sample`` folds each LoRA update into its base weight for the call
   (``rlsyn_trl.generators.lora_merge``); the baseline samples through peft's unmerged layers. The generator is the
   embedded prior with a cold-start adapter's shape (fresh embedders, LoRA rank 8 with non-zero weights), sampling
   as the end-to-end job does: 64 samples per batch, 10 stochastic DDIM steps, guidance 2.
2. Freed memory kept: the same sampling (merged) in a fresh process with and without
   ``rlsyn_trl.utils.runtime.keep_freed_memory`` (glibc's mmap and trim thresholds; the allocator is chosen per
   process).
3. Channels-last recognizer: a training step (forward and backward, batch 64, 32x32 grey) of the shipped identity
   encoder, as the recognizer trainer runs it on a CPU, against the default memory format.

Times are the best of ``--repeats``; the ratio is baseline / new (above 1: the new path is faster). Each variant
also reports the largest output difference against its baseline (rounding only: the same seed, the same chain).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import subprocess
import sys
import time

import torch
from peft import LoraConfig

SAMPLES, STEPS, GUIDANCE, ETA = 64, 10, 2.0, 1.0


def best_time(function, repeats: int) -> tuple[float, object]:
    function()  # warm-up: first-call allocations and kernel selection
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - began)
    return min(times), result


def lora_generator():
    """The embedded prior with a cold-start adapter's layout: 20 fresh identities and LoRA rank 8 on every block."""
    from rlsyn_trl.generators import load_generator
    from rlsyn_trl.generators.adapter import add_lora, replace_class_embedders
    from rlsyn_trl.settings import DEFAULT_LORA_TARGETS

    generator = load_generator("embedded:orl_faces")
    replace_class_embedders(generator, [f"s{index}" for index in range(21, 41)])
    lora = LoraConfig(r=8, lora_alpha=8, target_modules=list(DEFAULT_LORA_TARGETS), init_lora_weights=False)
    add_lora(generator, lora)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in generator.transformer.named_parameters():
            if "lora_" in name or "class_embedder" in name:
                parameter.normal_(0.0, 0.02)
    return generator.to("cpu")


def sample_once(generator) -> torch.Tensor:
    labels = torch.arange(SAMPLES) % generator.num_classes
    return generator.sample(
        labels, seed=0, num_inference_steps=STEPS, guidance_scale=GUIDANCE, eta=ETA, batch_size=SAMPLES
    )


def lora_merge_row(repeats: int) -> dict:
    import rlsyn_trl.generators.dit as dit

    generator = lora_generator()
    merged_s, merged = best_time(lambda: sample_once(generator), repeats)
    original = dit.merged_lora
    dit.merged_lora = lambda model: contextlib.nullcontext(model)  # the baseline: peft's unmerged layers
    try:
        unmerged_s, unmerged = best_time(lambda: sample_once(generator), repeats)
    finally:
        dit.merged_lora = original
    return {
        "row": f"sampling {SAMPLES} samples, LoRA merged vs unmerged",
        "baseline_s": unmerged_s,
        "new_s": merged_s,
        "max_abs_diff": float((merged - unmerged).abs().max()),
    }


def allocator_child(keep: bool, repeats: int, threads: int) -> None:
    """Runs in a fresh process: glibc's settings apply to a whole process."""
    from rlsyn_trl.utils.runtime import keep_freed_memory

    torch.set_num_threads(threads)
    applied = keep_freed_memory() if keep else False
    generator = lora_generator()
    seconds, images = best_time(lambda: sample_once(generator), repeats)
    print(json.dumps({"seconds": seconds, "applied": applied, "checksum": float(images.double().sum())}))


def allocator_row(repeats: int, threads: int) -> dict:
    def run(keep: bool) -> dict:
        command = [sys.executable, __file__, "--allocator-child", str(int(keep)), "--repeats", str(repeats)]
        command += ["--threads", str(threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return json.loads(output.strip().splitlines()[-1])

    default, kept = run(False), run(True)
    return {
        "row": f"sampling {SAMPLES} samples (LoRA merged), freed memory kept vs glibc defaults"
        + ("" if kept["applied"] else " (not applied on this system)"),
        "baseline_s": default["seconds"],
        "new_s": kept["seconds"],
        "max_abs_diff": abs(default["checksum"] - kept["checksum"]),
    }


def channels_last_row(repeats: int) -> dict:
    from rlsyn_trl.encoders.identity_encoder import IdentityEncoder
    from rlsyn_trl.utils.model_sources import resolve_pretrained_folder

    encoder = IdentityEncoder.from_pretrained(resolve_pretrained_folder("embedded:orl_faces/encoder")).train()
    fast = copy.deepcopy(encoder).to(memory_format=torch.channels_last)
    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def step(model) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        model(images).pow(2).mean().backward()
        return next(model.parameters()).grad.detach().clone()

    baseline_s, baseline_grad = best_time(lambda: step(encoder), repeats)
    new_s, new_grad = best_time(lambda: step(fast), repeats)
    return {
        "row": "recognizer training step (identity encoder, batch 64), channels-last vs default",
        "baseline_s": baseline_s,
        "new_s": new_s,
        "max_abs_diff": float((baseline_grad - new_grad).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--allocator-child", type=int, choices=[0, 1], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allocator_child is not None:
        allocator_child(bool(args.allocator_child), args.repeats, args.threads)
        return
    torch.set_num_threads(args.threads)
    from rlsyn_trl.utils.runtime import cpu_flags

    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), best of {args.repeats}")
    print(f"bf16-relevant flags: {sorted(flag for flag in cpu_flags() if 'bf16' in flag or 'amx' in flag) or 'none'}")
    print("| what | baseline s | new s | speed-up | max difference |\n|---|---|---|---|---|")
    rows = (lora_merge_row, lambda repeats: allocator_row(repeats, args.threads), channels_last_row)
    for measure in rows:
        row = measure(args.repeats)
        ratio = row["baseline_s"] / row["new_s"]
        times = f"{row['baseline_s']:.2f} | {row['new_s']:.2f} | {ratio:.2f}x"
        print(f"| {row['row']} | {times} | {row['max_abs_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
