"""Tiny models for the generation, audit and Hub tests: a 2-block DiT adapter and a 2-stage encoder at 16 px.

They are untrained: the tests check plumbing (shards, schema, audit rules, publishing), not image quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import build_tiny_generator

from rlsyn_trl.encoders import IdentityEncoder, IdentityEncoderConfig
from rlsyn_trl.generation import GenerationConfig
from rlsyn_trl.generators import class_embedders
from rlsyn_trl.generators.adapter import save_adapter
from rlsyn_trl.provenance import stage_record, write_provenance
from rlsyn_trl.trainers import prepare_identity_generator

RESOLUTION = 16
PRIVATE_NAMES = [f"s{i}" for i in range(21, 41)]
IDENTITIES = ["s21", "s22", "s23"]
PER_IDENTITY = 3


def build_tiny_adapter(folder: Path, label_names: list[str], shots: int = 2, split_seed: int = 0) -> Path:
    """A tiny pixel DiT base (width 32, depth 2, patch 4) saved under ``folder/base`` and an adapter on top of it,
    with the provenance a cold start writes (its split)."""
    build_tiny_generator(num_classes=4, resolution=RESOLUTION).save_pretrained(folder / "base")
    generator = prepare_identity_generator(str(folder / "base"), label_names, None)
    for embedder in class_embedders(generator.transformer):  # non-zero tables: identities give different samples
        torch.nn.init.normal_(embedder.embedding_table.weight, std=0.5)
    adapter = save_adapter(
        generator, folder / "adapter", str(folder / "base"), extra={"shots": shots, "split_seed": split_seed}
    )
    write_provenance(adapter, stage_record("cold_start", {"shots": shots, "split_seed": split_seed}))
    return adapter


def build_tiny_encoder(folder: Path) -> Path:
    torch.manual_seed(0)
    config = IdentityEncoderConfig(num_channels=1, image_size=RESOLUTION, widths=[4, 8], embedding_size=8)
    IdentityEncoder(config).eval().save_pretrained(folder)
    return folder


def build_tiny_models(root: Path) -> dict[str, Path]:
    """The adapter (over the 20 private ORL identities) and encoder every generation test uses."""
    return {"adapter": build_tiny_adapter(root, PRIVATE_NAMES), "encoder": build_tiny_encoder(root / "encoder")}


def tiny_config(models: dict, datasets_cache: str, output_dir: Path, **overrides) -> GenerationConfig:
    """A 9-sample run (3 identities x 3) cut into shards of 4, so the last shard is partial."""
    return GenerationConfig(**tiny_settings(models, datasets_cache, output_dir, **overrides))


def tiny_settings(models: dict, datasets_cache: str, output_dir: Path, **overrides) -> dict:
    """:func:`tiny_config`'s settings as plain values (a recipe YAML)."""
    values = {
        "adapter": str(models["adapter"]),
        "encoder": str(models["encoder"]),
        "identities": IDENTITIES,
        "samples_per_identity": PER_IDENTITY,
        "shard_size": 4,
        "batch_size": 3,
        "num_inference_steps": 2,
        "device": "cpu",
        "output_dir": str(output_dir),
        "dataset_cache_dir": datasets_cache,
    }
    return {**values, **overrides}


def build_tiny_phis(root: Path) -> dict[str, str]:
    """One tiny stand-in of every kind of phi the loader takes, each at another input size or channel count than
    the 16 px grayscale samples: the project's encoder, a saved recognizer, a transformers ViT and an ONNX embedder."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    from rlsyn_trl.recognizer import RecognizerConfig, RecognizerModel, build_recognizer

    torch.manual_seed(0)
    settings = RecognizerConfig(output_dir=str(root), resolution=[24], embedding_size=8, hidden_sizes=[8, 16])
    recognizer = build_recognizer(settings, PRIVATE_NAMES)
    RecognizerModel.wrap(recognizer, settings, PRIVATE_NAMES).eval().save_pretrained(root / "recognizer")
    vit = ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)  # fmt: skip
    ViTModel(vit).eval().save_pretrained(root / "vit")
    ViTImageProcessorPil(size={"height": 24, "width": 24}).save_pretrained(root / "vit")
    embedder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    torch.onnx.export(embedder.eval(), (torch.zeros(1, 3, 20, 20),), str(root / "embedder.onnx"),
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}}, dynamo=False)  # fmt: skip
    return {
        "rlsyn_encoder": str(build_tiny_encoder(root / "encoder")),
        "rlsyn_recognizer": str(root / "recognizer"),
        "transformers": str(root / "vit"),
        "onnx_arcface": str(root / "embedder.onnx"),
    }


def plant_real_copy(run_dir: Path, real_train, row: int, sample_id: int = 0) -> None:
    """Replace sample ``sample_id`` in a finished run's shards by real training image ``row`` (at the samples'
    resolution, as the audit sees it), so that the next run of the same config re-scores a known copy."""
    import io

    import pyarrow.parquet as pq

    from rlsyn_trl.data import preprocess_images, tensor_to_pil
    from rlsyn_trl.generation import SHARDS_DIR, shard_path

    shard = shard_path(Path(run_dir) / SHARDS_DIR, 0)
    table = pq.read_table(shard).to_pydict()
    position = table["sample_id"].index(sample_id)
    copy = tensor_to_pil(preprocess_images([real_train[row]["image"]], RESOLUTION, 1))[0]
    buffer = io.BytesIO()
    copy.save(buffer, format="PNG")
    table["image"][position] = {"bytes": buffer.getvalue(), "path": None}
    pq.write_table(pq.read_table(shard).from_pydict(table, schema=pq.read_schema(shard)), shard)


COPY_SAMPLE = 1  # in build_run_with_copy: sample 1 (identity s21) is replaced by a real training photo of s22
COPY_IDENTITY = "s22"


def build_run_with_copy(root: Path, datasets_cache: str, real_train) -> tuple[Path, int]:
    """A 9-sample run whose sample ``COPY_SAMPLE`` is a real training photo of ``COPY_IDENTITY``, scored as such:
    generated, copy planted, generated again (only the scoring reruns). Returns the run folder and the real row."""
    from rlsyn_trl.recipes.generate import main as generate_synthetic_dataset

    config = tiny_config(build_tiny_models(root / "models"), datasets_cache, root / "run")
    generate_synthetic_dataset(config)
    row = real_train["label"].index(real_train.features["label"].str2int(COPY_IDENTITY))
    plant_real_copy(Path(config.output_dir), real_train, row, sample_id=COPY_SAMPLE)
    generate_synthetic_dataset(config)
    return Path(config.output_dir), row
