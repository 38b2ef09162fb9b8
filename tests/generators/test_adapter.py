"""Adapter folders: names that neither the Hub nor peft mistake for a peft adapter, and older folders still load."""

import pytest
import torch
from peft import LoraConfig, PeftConfig

from rlsyn_trl.generators import IdentityGenerator, class_embedders
from rlsyn_trl.generators.adapter import LORA_FILE, add_lora, replace_class_embedders, save_adapter
from rlsyn_trl.utils.model_sources import ADAPTER_CONFIG

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

torch.set_num_threads(1)


def test_adapter_files_are_not_peft_names_and_legacy_folders_load(tmp_path, tiny_base_dir):
    generator = IdentityGenerator.from_pretrained(tiny_base_dir)
    replace_class_embedders(generator, ["a", "b"])
    for embedder in class_embedders(generator.transformer):
        torch.nn.init.normal_(embedder.embedding_table.weight, std=0.5)
    lora = LoraConfig(r=2, lora_alpha=2, target_modules=["attn1.to_q", "attn1.to_v"])
    add_lora(generator, lora)
    for name, parameter in generator.transformer.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    folder = save_adapter(generator, tmp_path / "adapter", str(tiny_base_dir), lora_config=lora)
    names = {path.name for path in folder.iterdir()}
    assert {ADAPTER_CONFIG, LORA_FILE} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    with pytest.raises(ValueError, match="adapter_config.json"):  # peft does not take it for one of its adapters
        PeftConfig.from_pretrained(str(folder))
    expected = IdentityGenerator.from_pretrained(folder).sample(["a", "b"], seed=0, num_inference_steps=2)

    (folder / ADAPTER_CONFIG).rename(folder / "adapter_config.json")  # a folder written by an earlier version
    (folder / LORA_FILE).rename(folder / "adapter_model.safetensors")
    legacy = IdentityGenerator.from_pretrained(folder)
    assert torch.equal(legacy.sample(["a", "b"], seed=0, num_inference_steps=2), expected)
    save_adapter(legacy, folder, str(tiny_base_dir), lora_config=lora)  # saved again in place: the new names only
    assert not {path.name for path in folder.iterdir()} & {"adapter_config.json", "adapter_model.safetensors"}


def test_a_damaged_adapter_file_is_named_with_what_it_should_hold(tmp_path, tiny_base_dir):
    from rlsyn_trl.generators.adapter import EMBEDDERS_FILE
    from rlsyn_trl.utils.io import DamagedFileError

    generator = IdentityGenerator.from_pretrained(tiny_base_dir)
    replace_class_embedders(generator, ["a", "b"])
    lora = LoraConfig(r=2, lora_alpha=2, target_modules=["attn1.to_q"])
    add_lora(generator, lora)
    folder = save_adapter(generator, tmp_path / "adapter", str(tiny_base_dir), lora_config=lora)
    for name, holds in ((LORA_FILE, "LoRA weights"), (EMBEDDERS_FILE, "identity embedder tables")):
        good = (folder / name).read_bytes()
        (folder / name).write_bytes(good[: len(good) // 2])  # a copy cut short
        with pytest.raises(DamagedFileError, match=rf"{name} should hold the adapter's {holds} .*truncated"):
            IdentityGenerator.from_pretrained(folder)
        (folder / name).write_bytes(good)
    (folder / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(DamagedFileError, match=rf"{ADAPTER_CONFIG} should hold an identity adapter's config"):
        IdentityGenerator.from_pretrained(folder)


def test_a_folder_that_is_no_generator_says_what_was_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty is not a generator: expected an identity adapter .* but it is"):
        IdentityGenerator.from_pretrained(tmp_path / "empty")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match=r"but it holds metrics.jsonl\. Point --adapter"):
        IdentityGenerator.from_pretrained(tmp_path / "logs")
