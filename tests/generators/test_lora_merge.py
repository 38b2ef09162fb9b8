"""Sampling folds LoRA into the weights: the same samples as peft's unmerged layers, and the exact weights after."""

import contextlib

import pytest
import torch
from peft import LoraConfig

import rlsyn_trl.generators.dit as dit
from rlsyn_trl.generators import IdentityGenerator
from rlsyn_trl.generators.adapter import add_lora, replace_class_embedders
from rlsyn_trl.generators.lora_merge import mergeable_lora_layers, merged_lora

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

torch.set_num_threads(1)


@pytest.fixture
def lora_generator(tiny_base_dir):
    generator = IdentityGenerator.from_pretrained(tiny_base_dir)
    replace_class_embedders(generator, ["a", "b"])
    add_lora(generator, LoraConfig(r=2, lora_alpha=2, target_modules=["attn1.to_q", "attn1.to_v", "ff.net.2"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in generator.transformer.named_parameters():
            if "lora_" in name or "class_embedder" in name:
                parameter.normal_(0.0, 0.3)  # an update large enough to change every sample
    return generator


def weights(generator):
    return {name: value.clone() for name, value in generator.transformer.state_dict().items()}


def test_sampling_with_lora_merged_matches_the_unmerged_layers_and_restores_every_weight(lora_generator, monkeypatch):
    before = weights(lora_generator)
    options = {"seed": 0, "num_inference_steps": 3, "guidance_scale": 2.0, "eta": 1.0}
    merged = lora_generator.sample(["a", "b", "a"], **options)
    after = weights(lora_generator)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)  # bit for bit, not W + dW - dW
    assert not any(layer.merged for layer in mergeable_lora_layers(lora_generator.transformer))
    blocks = len(lora_generator.transformer.transformer_blocks)
    assert len(mergeable_lora_layers(lora_generator.transformer)) == 3 * blocks

    monkeypatch.setattr(dit, "merged_lora", lambda model: contextlib.nullcontext(model))
    unmerged = lora_generator.sample(["a", "b", "a"], **options)
    with torch.no_grad():
        for name, parameter in lora_generator.transformer.named_parameters():
            if "lora_B" in name:
                parameter.zero_()
    plain = lora_generator.sample(["a", "b", "a"], **options)
    rounding = (merged - unmerged).abs().max()
    assert rounding < 1e-4
    assert (merged - plain).abs().max() > 100 * rounding  # the update does act on the samples


def test_an_error_inside_the_block_still_restores_the_weights(lora_generator):
    before = weights(lora_generator)
    with pytest.raises(RuntimeError, match="interrupted"), merged_lora(lora_generator.transformer):
        assert all(layer.merged for layer in all_lora_layers(lora_generator))
        raise RuntimeError("interrupted")
    after = weights(lora_generator)
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not any(layer.merged for layer in all_lora_layers(lora_generator))


def test_half_precision_weights_stay_unmerged(lora_generator):
    lora_generator.transformer.to(torch.bfloat16)
    assert mergeable_lora_layers(lora_generator.transformer) == []  # W + dW in bf16 would drop a small update
    with merged_lora(lora_generator.transformer):
        assert not any(layer.merged for layer in all_lora_layers(lora_generator))


def all_lora_layers(generator):
    from peft.tuners.lora import LoraLayer

    return [module for module in generator.transformer.modules() if isinstance(module, LoraLayer)]
