"""The paper-scale recipes (recipes/casia_webface, recipes/market1501) and the recognizer features they rely on.

The end-to-end runs go through ``benchmarks/gpu_smoke.py --tiny``: every stage's recipe script parses its YAML with
``TrlParser`` as a launch does, only sizes and steps overridden, on random small stand-ins of the paper's model
families (a DiT + SD-style VAE in the ``facebook/DiT-XL-2-256`` layout, a bottleneck ResNet as ``microsoft/resnet-50``)
and fixture trees in the releases' layouts: the YAMLs are known to run before anyone spends GPU hours on them.
"""

import json
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel
from PIL import Image
from transformers import ViTConfig, ViTModel
from trl import TrlParser

from rlsyn_trl.data import load_identity_dataset, preprocess_images
from rlsyn_trl.generation import GenerationConfig
from rlsyn_trl.generators import IdentityGenerator, class_embedders
from rlsyn_trl.generators.adapter import read_adapter_config
from rlsyn_trl.generators.paper_configs import dit_xl_2_config, sd_vae_config
from rlsyn_trl.recognizer import (
    MixedBatchSampler,
    MixedIdentityDataset,
    RecognizerConfig,
    build_augmentation,
    build_recognizer,
)
from rlsyn_trl.recognizer.evaluation import evaluate_recognizer, reid_evaluation
from rlsyn_trl.trainers import ColdStartConfig, RLSynDDPOConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_smoke  # noqa: E402

from rlsyn_trl.recipes.train_recognizer import RecognizerScriptArguments as ScriptArguments  # noqa: E402
from rlsyn_trl.recipes.train_recognizer import cli as train_recognizer_cli  # noqa: E402

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)

CONFIGS = {
    "sft": (ColdStartConfig,),
    "ddpo": (RLSynDDPOConfig,),
    "generate": (GenerationConfig,),
    "recognizer": (ScriptArguments, RecognizerConfig),
}


def parse(benchmark: str, stage: str, *args: str) -> tuple:
    """A paper-scale YAML read the way its recipe reads it."""
    yaml = REPO / "recipes" / benchmark / f"{stage}.yaml"
    return TrlParser(CONFIGS[stage.split("_")[0]]).parse_args_and_config(["--config", str(yaml), *args])


@pytest.mark.parametrize("benchmark", gpu_smoke.BENCHMARKS)
def test_yamls_hold_the_paper_settings(benchmark):
    (sft,), (ddpo,), (generate,) = (parse(benchmark, stage) for stage in ("sft", "ddpo", "generate"))
    script, recognizer = parse(benchmark, "recognizer")
    assert sft.base_model == gpu_smoke.DIT_ID and sft.learning_rate == 1e-5 and sft.lora_rank == 0
    assert ddpo.train_learning_rate == 1e-5 and ddpo.adapter == sft.output_dir and generate.adapter == ddpo.output_dir
    assert recognizer.synthetic_dataset == f"{generate.output_dir}/dataset" and recognizer.selection
    assert recognizer.weight_decay == 5e-4 and recognizer.channels == 3
    if benchmark == "casia_webface":
        assert sft.resolution == 128 and sft.dataset_config == "subset_1k"
        assert recognizer.model == "iresnet-50" and recognizer.from_scratch and recognizer.loss == "cosface"
        assert (recognizer.cosface_scale, recognizer.cosface_margin) == (64.0, 0.35)
        assert recognizer.per_device_train_batch_size == 128
        assert recognizer.optim == "sgd" and recognizer.optim_args == "momentum=0.9"
        assert script.verification_sets == ["lfw", "agedb_30", "cfp_fp", "calfw", "cplfw"]
    else:
        assert sft.resolution == 256 and sft.shots is None and ddpo.shots is None and script.shots is None
        assert recognizer.model == gpu_smoke.RESNET_ID and recognizer.reid_neck and recognizer.last_stride == 1
        assert recognizer.resolution == [256, 128] and recognizer.loss == "cross_entropy"
        assert recognizer.label_smoothing == 0.1
        assert recognizer.triplet_weight > 0 and recognizer.identities_per_batch == 16
        assert recognizer.per_device_train_batch_size == 64 and recognizer.l2_adam
        assert recognizer.flip and recognizer.crop_padding > 0


@pytest.mark.parametrize(
    "benchmark",
    # CASIA takes about 80 s on 2 CPU cores (its subset_1k config has 1,000 identities to generate and audit)
    # CUHK03-NP's run the same code as Market-1501's (only their YAMLs' data differ; those are run below, fast)
    [pytest.param(name, marks=pytest.mark.slow) for name in ("casia_webface", "cuhk03_labeled", "cuhk03_detected")]
    + ["market1501"],
)
def test_every_stage_of_the_paper_recipes_runs_on_small_stand_ins(benchmark, tmp_path):
    assert gpu_smoke.main(["--tiny", "--benchmarks", benchmark, "--output-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert [row["stage"] for row in rows] == list(gpu_smoke.RECIPES)
    steps = {row["stage"]: row["optimizer_steps"] for row in rows}
    assert steps["sft"] == 2 and steps["recognizer"] == 2 and steps["ddpo"] > 0 and steps["generate"] == 0
    assert all(row["samples_per_s"] > 0 and row["peak_memory_gb"] > 0 for row in rows)

    outputs = tmp_path / "outputs" / benchmark
    adapter = read_adapter_config(outputs / "ddpo")
    assert adapter["base_model"] == gpu_smoke.DIT_ID and adapter["resolution"] == 32  # the tiny override, kept
    with gpu_smoke.smoke_environment(tmp_path):
        assert IdentityGenerator.from_pretrained(outputs / "ddpo").resolution == 32
    scored = datasets.load_from_disk(str(outputs / "synthetic_scored"))
    assert {"utility", "selection_weight"} <= set(scored.column_names)
    results = json.loads((outputs / "recognizer" / "test_results.json").read_text())
    if benchmark != "casia_webface":
        assert {"test_mAP", "test_rank1", "test_rank5", "test_rank10"} <= set(results)
    else:
        names = ["lfw", "agedb_30", "cfp_fp", "calfw", "cplfw"]
        assert {f"test_{name}_accuracy" for name in names} | {"test_verification_mean_accuracy"} <= set(results)
    assert all(0 <= value <= 1 for key, value in results.items() if "accuracy" in key or "rank" in key)


def test_the_package_ships_dit_xl_2_and_the_sd_vae():
    """The configs the true-size runs build from are the paper's models: DiT-XL/2 has DiT's own count of 675,129,632
    parameters once laid out as DiT lays it out (diffusers keeps the fixed positional embedding as a buffer and gives
    each of the 28 blocks its own copy of the timestep and label embedders), the VAE is Stable Diffusion's."""
    with torch.device("meta"):  # shapes only: no memory, no time
        transformer = DiTTransformer2DModel(**dit_xl_2_config())
        vae = AutoencoderKL(**sd_vae_config())
    config = transformer.config
    assert (config.num_layers, transformer.inner_dim, config.patch_size) == (28, 1152, 2)
    assert config.num_embeds_ada_norm == 1000 and config.out_channels == 2 * config.in_channels == 8  # learned variance
    per_block_copy = sum(p.numel() for p in transformer.transformer_blocks[0].norm1.emb.parameters())
    positional = (config.sample_size // config.patch_size) ** 2 * transformer.inner_dim
    assert sum(p.numel() for p in transformer.parameters()) - 27 * per_block_copy + positional == 675_129_632
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863 and vae.config.latent_channels == 4
    assert dit_xl_2_config() == gpu_smoke.DIT_XL_2 == gpu_smoke.FULL.dit


@pytest.mark.slow
def test_the_cold_start_runs_at_true_size(tmp_path):
    """``gpu_smoke.py --full-size``'s cold start, one step: DiT-XL/2 + the SD VAE at their true sizes (random weights,
    built from the package's configs) with the recipe's per-block identity embedders, CASIA faces at 128 px. The step
    trains the embedders, the adapter loads back onto DiT-XL/2, and the FLOP probe counts the true model (about 60 s
    and a peak RSS of 8 GB on 2 CPU cores)."""
    gpu_smoke.prepare(tmp_path, gpu_smoke.FULL, True, ["casia_webface"])
    with gpu_smoke.smoke_environment(tmp_path):
        row = gpu_smoke.run_stage("casia_webface", "sft", gpu_smoke.FULL, 1, probe=True)
        adapter = tmp_path / "outputs" / "casia_webface" / "sft"
        generator = IdentityGenerator.from_pretrained(adapter)
    assert row["optimizer_steps"] == 1 and read_adapter_config(adapter)["base_model"] == gpu_smoke.DIT_ID
    assert generator.resolution == 128 and generator.label_names == ["0000100", "0000101"]
    config = generator.transformer.config
    assert (config.num_layers, generator.transformer.inner_dim, config.patch_size) == (28, 1152, 2)
    embedders = class_embedders(generator.transformer)  # zero-initialised, one row per identity + the null class
    assert len(embedders) == 28 and all(e.embedding_table.num_embeddings == 3 for e in embedders)
    assert all(e.embedding_table.weight.abs().sum() > 0 for e in embedders)  # the step moved every block's
    with torch.device("meta"):
        base = DiTTransformer2DModel(**dit_xl_2_config())
    expected = sum(p.numel() for p in base.parameters()) - 28 * (1001 - 3) * 1152  # 3 rows instead of ImageNet's 1,001
    assert sum(p.numel() for p in generator.transformer.parameters()) == expected

    step, units = row["probe"]["train_step"], row["probe"]["units"]
    assert step["rows"] == 2 and step["unit_rows"] == {"vae_encode": 2, "dit_forward_grad": 2}
    tokens, weights = (128 // 8 // 2) ** 2, 28 * 12 * 1152**2  # 8x8 patches; attention 4 d^2 + MLP 8 d^2 per block
    assert units["dit_forward"]["flops_per_row"] == pytest.approx(2 * tokens * weights, rel=0.03)  # 2 per weight
    assert step["flops"] > 2 * (units["vae_encode"]["flops_per_row"] + 2 * units["dit_forward"]["flops_per_row"])


REID_RECOGNIZERS = ["cuhk03_labeled/recognizer", "cuhk03_detected/recognizer", "market1501/recognizer_vit"]


@pytest.mark.parametrize("recipe", REID_RECOGNIZERS)
def test_reid_recognizer_yamls_train_and_test_on_small_stand_ins(tmp_path, recipe):
    """Real-only runs of the ReID recognizer YAMLs not in the chain above: CUHK03-NP's BoT ResNet-50 and Market-1501's
    ViT-B/16 (a tiny ViT with a square 224-like grid served as its Hub id, interpolated to the 32x16 input)."""
    benchmark, stage = recipe.split("/")
    gpu_smoke.prepare(tmp_path, gpu_smoke.TINY, True, [benchmark])
    vit = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32)  # fmt: skip
    ViTModel(vit).save_pretrained(tmp_path / "vit")
    gpu_smoke.serve_from_cache(tmp_path / "vit", "google/vit-base-patch16-224", tmp_path / "hf_cache")
    (script, config) = parse(benchmark, stage)
    assert config.reid_neck and config.identities_per_batch == 16 and config.resolution == [256, 128]
    argv = ["--config", str(REPO / "recipes" / f"{recipe}.yaml"), "--synthetic_dataset", "", "--selection", "false",
            "--max_steps", "1", "--resolution", "32", "16", "--per_device_eval_batch_size", "8"]  # fmt: skip
    with gpu_smoke.smoke_environment(tmp_path):
        metrics = train_recognizer_cli(argv)
    assert {"test_mAP", "test_rank1", "test_rank5", "test_rank10"} <= set(metrics)
    assert all(0 <= metrics[key] <= 1 for key in ("test_mAP", "test_rank1"))
    assert (tmp_path / config.output_dir / "test_results.json").is_file()


def test_stage_split_options_reach_every_builder(tmp_path):
    """Every stage passes ``shots``/``seed``: CASIA takes shots as images per identity, ReID sets only ``None``."""
    rng = np.random.default_rng(0)
    gpu_smoke.write_market(tmp_path / "market", (8, 16), rng)
    gpu_smoke.write_casia(tmp_path / "casia", 3, 3, 8, rng)
    cache = str(tmp_path / "cache")
    market = load_identity_dataset("market1501", data_dir=str(tmp_path / "market"), cache_dir=cache, shots=None, seed=3)
    assert market["train"].num_rows == 4 * gpu_smoke.MARKET_TRAIN_IDS
    with pytest.raises(ValueError, match="fixed training splits.*shots to null"):
        load_identity_dataset("market1501", data_dir=str(tmp_path / "market"), cache_dir=cache, shots=2, seed=0)
    casia = load_identity_dataset("casia_webface", data_dir=str(tmp_path / "casia"), cache_dir=cache, shots=2, seed=0)
    assert casia["train"].num_rows == 6 and sorted(casia["train"]["label"]) == [0, 0, 1, 1, 2, 2]


def test_non_square_inputs_and_random_erasing(tmp_path):
    assert preprocess_images(Image.new("RGB", (64, 128)), [256, 128], 3).shape == (1, 3, 256, 128)
    assert preprocess_images(Image.new("L", (92, 112)), 32).shape == (1, 1, 32, 32)
    config = RecognizerConfig(output_dir=str(tmp_path), resolution=[16, 8], channels=3, random_erasing=1.0)
    assert config.resolution == [16, 8]
    assert RecognizerConfig(output_dir=str(tmp_path), resolution=12).resolution == [12, 12]  # a YAML's single int
    config.flip = config.crop_padding = config.affine_degrees = config.affine_scale = 0
    config.brightness = config.contrast = 0
    erased = build_augmentation(config)(torch.ones(4, 3, 16, 8))
    assert erased.shape == (4, 3, 16, 8) and (erased != 1).flatten(1).any(dim=1).all()


def test_identity_batches_hold_p_identities_of_k_half_synthetic():
    real_labels = torch.arange(6).repeat_interleave(5)  # 6 identities x 5 real images
    synthetic_labels = torch.arange(6).repeat_interleave(3)
    dataset = MixedIdentityDataset(torch.zeros(30, 1, 2, 2), real_labels, torch.zeros(18, 1, 2, 2), synthetic_labels)
    sampler = MixedBatchSampler(dataset, 16, 0.5, torch.Generator().manual_seed(0), identities_per_batch=4)
    indices = torch.tensor(list(sampler))
    assert len(indices) == len(sampler) and len(indices) % 16 == 0
    for block in indices.view(-1, 16):
        labels = dataset.labels[block].view(4, 4)
        assert labels.unique().numel() == 4 and (labels == labels[:, :1]).all()  # 4 identities x 4 images
        real = (block < dataset.num_real).view(4, 4)
        assert (real.sum(dim=1) == 2).all()  # 2 real + 2 synthetic of each identity
        assert all(group.unique().numel() == 4 for group in block.view(4, 4))  # no image twice in a group
    with pytest.raises(ValueError, match="identities_per_batch is 8 but .* only 6"):
        MixedBatchSampler(dataset, 16, 0.5, torch.Generator(), identities_per_batch=8)


def test_cross_entropy_plus_batch_hard_triplet(tmp_path):
    config = RecognizerConfig(
        output_dir=str(tmp_path),
        loss="cross_entropy",
        triplet_weight=0.5,
        resolution=[32, 16],
        channels=3,
        per_device_train_batch_size=8,
        identities_per_batch=4,
    )
    model = build_recognizer(config, ["a", "b", "c", "d"]).train()
    pixels, labels = torch.randn(8, 3, 32, 16), torch.arange(4).repeat_interleave(2)
    output = model(pixels, labels)
    embeddings = model.embed(pixels)
    identity = model.per_sample_loss(output, labels).mean()
    triplet = model.triplet(embeddings, labels, model.miner(embeddings, labels))
    assert output.logits.shape == (8, 4) and triplet > 0
    torch.testing.assert_close(output.loss, identity + 0.5 * triplet)
    output.loss.backward()
    assert all(p.grad is not None for p in model.backbone.classifier.parameters())
    with pytest.raises(ValueError, match="not a multiple of identities_per_batch"):
        RecognizerConfig(output_dir=str(tmp_path), per_device_train_batch_size=10, identities_per_batch=4)


class MeanColour(torch.nn.Module):
    """A stand-in recognizer whose embedding is the image's mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(3))

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.mean(dim=(2, 3)) + self.offset


def images(colours: list[tuple[int, int, int]]) -> list[Image.Image]:
    return [Image.new("RGB", (8, 16), colour) for colour in colours]


def test_reid_evaluation_ranks_by_embedding_with_camera_filtering():
    red, reddish, blue = (200, 60, 60), (200, 90, 60), (30, 30, 220)
    features = datasets.Features(
        {"image": datasets.Image(), "person_id": datasets.Value("int32"), "camera_id": datasets.Value("int32")}
    )
    query = datasets.Dataset.from_dict({"image": images([red]), "person_id": [1], "camera_id": [1]}, features=features)
    gallery = datasets.Dataset.from_dict(
        # same-camera copy of the query (filtered), another person in the query's colour, the true match, a far one
        {"image": images([red, red, reddish, blue]), "person_id": [1, 2, 1, 3], "camera_id": [1, 2, 2, 3]},
        features=features,
    )
    metrics = reid_evaluation(MeanColour(), query, gallery, [16, 8], 3)
    assert metrics == {"mAP": pytest.approx(0.5), "rank1": 0.0, "rank5": 1.0, "rank10": 1.0}


def test_verification_evaluation_and_mean_over_sets(tmp_path):
    colours = [(200, 60, 60), (30, 30, 220), (60, 200, 60), (220, 220, 30)]
    first, second = [], []
    for index in range(20):  # even pairs: same colour; odd pairs: two far-apart colours
        first.append(colours[index % 4])
        second.append(colours[index % 4] if index % 2 == 0 else colours[(index + 1) % 4])
    features = datasets.Features(
        {
            "image_a": datasets.Image(),
            "image_b": datasets.Image(),
            "issame": datasets.Value("bool"),
            "fold": datasets.Value("int32"),
        }
    )
    pairs = datasets.Dataset.from_dict(
        {
            "image_a": images(first),
            "image_b": images(second),
            "issame": [index % 2 == 0 for index in range(20)],
            "fold": [index // 2 for index in range(20)],
        },
        features=features,
    )
    config = RecognizerConfig(output_dir=str(tmp_path), resolution=16, channels=3)
    metrics = evaluate_recognizer(MeanColour(), config, datasets.DatasetDict(), {"lfw": pairs, "calfw": pairs})
    assert metrics["test_lfw_accuracy"] == 1.0 and metrics["test_calfw_accuracy"] == 1.0
    assert metrics["test_verification_mean_accuracy"] == 1.0 and "test_mAP" not in metrics
