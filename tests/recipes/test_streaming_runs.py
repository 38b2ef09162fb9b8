"""The cold start and the recognizer trained on a streamed split (RecordIO, Parquet) record what a built run
records, and the recognizer tests on the very images a built run tests on."""

from __future__ import annotations

import json

import pytest
import torch
from stored_identities import COUNTS, write_parquet, write_records

from rlsyn_trl.data import dataset_to_tensors
from rlsyn_trl.provenance import DataSplit, read_provenance
from rlsyn_trl.recognizer import RecognizerConfig
from rlsyn_trl.recognizer.trainer import streamed_examples


def rows(images: torch.Tensor, labels: torch.Tensor) -> list[tuple]:
    """Each (image, label) as a hashable row, sorted: the same images and labels in any order compare equal."""
    return sorted((int(label), *image.flatten().tolist()) for image, label in zip(images, labels))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache")


def test_cold_start_streamed_records_the_built_split(cache, tiny_base_dir, tmp_path):
    from rlsyn_trl.recipes.sft import main as cold_start
    from rlsyn_trl.trainers import ColdStartConfig

    parquet, records = write_parquet(tmp_path / "parquet"), write_records(tmp_path / "rec")
    common = dict(base_model=str(tiny_base_dir), max_steps=2, batch_size=4, warmup_steps=1, num_inference_steps=2,
                  grid_per_identity=1, checkpoint_every=2, shots=2, split_seed=1)  # fmt: skip
    data = {}
    for streaming in (False, True):
        out = tmp_path / f"parquet-{streaming}"
        summary = cold_start(ColdStartConfig(output_dir=str(out), dataset_name=str(parquet), streaming=streaming,
                                             shuffle_buffer=3, **common))  # fmt: skip
        assert summary["steps"] == 2 and summary["train_images"] == 2 * len(COUNTS)
        data[streaming] = read_provenance(out)["data"]
    assert data[True] == data[False]  # same split, identities, images: a later stage cannot tell them apart
    out = tmp_path / "recordio"
    config = ColdStartConfig(output_dir=str(out), dataset_name="casia_webface", data_dir=str(records), streaming=True,
                             **common)  # fmt: skip
    assert cold_start(config)["steps"] == 2 and (out / "samples.png").is_file()
    recorded = read_provenance(out)["data"]
    built = DataSplit("casia_webface", None, str(records), 2, 1)
    assert recorded["train_images"] == built.record(built.load())["train_images"]


def test_recognizer_streamed_tests_on_the_built_images(cache, tmp_path):
    from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments, main

    parquet = write_parquet(tmp_path / "parquet")
    split = DataSplit(str(parquet), None, None, 2, 0)
    built, streamed = split.load(), split.load(streaming=True)
    config = RecognizerConfig(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                              report_to="none", disable_tqdm=True, channels=1, resolution=[8])  # fmt: skip
    for name in ("train", "test"):
        items = list(streamed_examples(streamed[name], config, shuffle_buffer=4))
        pixels, labels = torch.stack([i["pixel_values"] for i in items]), torch.stack([i["labels"] for i in items])
        assert rows(pixels, labels) == rows(*dataset_to_tensors(built[name], 8)), name

    script = RecognizerScriptArguments(dataset_name=str(parquet), shots=2, split_seed=0, streaming=True)
    metrics = main(script, config)
    assert 0 <= metrics["test_accuracy"] <= 1
    assert read_provenance(tmp_path / "run")["data"] == split.record(built)
    names = json.loads((tmp_path / "run" / "config.json").read_text())["id2label"]
    assert list(names.values()) == built["train"].features["label"].names

    config.synthetic_dataset = str(tmp_path / "synthetic")
    with pytest.raises(ValueError, match="--synthetic_dataset needs every real image"):
        from rlsyn_trl.recognizer.trainer import check_streamable

        check_streamable(config, None)


def test_encoder_streamed_from_parquet_records_the_built_split(cache, tmp_path):
    from rlsyn_trl.recipes.pretrain_encoder import main as pretrain_encoder
    from rlsyn_trl.trainers.encoder_pretraining import EncoderPretrainConfig

    parquet, records = write_parquet(tmp_path / "parquet"), write_records(tmp_path / "rec")
    config = EncoderPretrainConfig(
        output_dir=str(tmp_path / "encoder"), dataset_name=str(parquet), dataset_config=None, streaming=True,
        target_dataset_name="casia_webface", target_data_dir=str(records), resolution=8, encoder_widths=[4],
        embedding_size=8, encoder_steps=3, encoder_batch_size=4, checkpoint_every=3, mixed_precision="no",
    )  # fmt: skip
    summary = pretrain_encoder(config)
    assert summary["steps_done"] == 3 and summary["num_images"] == sum(COUNTS)
    split = DataSplit(str(parquet), None, None, None, 0)
    recorded = read_provenance(tmp_path / "encoder")["data"]
    assert recorded["train_images"] == split.record(split.load())["train_images"]
