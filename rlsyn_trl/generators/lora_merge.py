"""Sampling with LoRA folded into the base weights, and the exact weights back afterwards.

An unmerged LoRA layer adds two thin matrix products, a scale and a sum to every adapted linear layer. On a CPU
those memory-bound operations were about 40% of the embedded DiT's forward pass: a guided DDIM step at batch 64 took
1.6x as long as with the update folded into the weight (``benchmarks/cpu_speedups.py``). Sampling needs no
gradient, so :func:`merged_lora` folds the update in for the duration of a sampling call.

On exit the saved base weights are copied back rather than the update subtracted again: ``(W + dW) - dW`` is not
``W`` bit for bit in floating point, and a preview grid drawn between two training steps must not move the training
run. Half-precision weights are left unmerged: rounding ``W + dW`` to bf16 (8 mantissa bits) would drop most of a
small update.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft.tuners.lora import LoraLayer

MERGEABLE_DTYPES = (torch.float32, torch.float64)


def mergeable_lora_layers(model: torch.nn.Module) -> list[LoraLayer]:
    """The model's active, unmerged LoRA layers whose base weights are full precision."""
    return [
        module
        for module in model.modules()
        if isinstance(module, LoraLayer)
        and not module.merged
        and not module.disable_adapters
        and module.get_base_layer().weight.dtype in MERGEABLE_DTYPES
    ]


@contextmanager
def merged_lora(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Fold every mergeable LoRA update into its base weight inside the block; restore the exact weights after."""
    layers = mergeable_lora_layers(model)
    saved = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    merged: list[LoraLayer] = []
    try:
        with torch.no_grad():
            for layer in layers:
                layer.merge()
                merged.append(layer)
        yield model
    finally:
        with torch.no_grad():
            for layer, weight in zip(merged, saved):
                layer.unmerge()  # peft's bookkeeping; the copy below makes the weight exact again
                layer.get_base_layer().weight.copy_(weight)
