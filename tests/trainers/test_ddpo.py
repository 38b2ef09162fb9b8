"""RLSynDDPOTrainer and its pipeline adapter on tiny models (16x16 DiT of width 32, depth 2, 4 of 20 identities)."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rlsyn_trl.data import load_identity_dataset
from rlsyn_trl.encoders import IdentityEncoder, IdentityEncoderConfig
from rlsyn_trl.generators import IdentityGenerator, build_pixel_dit, class_embedders, default_scheduler
from rlsyn_trl.generators.adapter import add_lora, replace_class_embedders, save_adapter
from rlsyn_trl.provenance import ProvenanceError, stage_record, write_provenance
from rlsyn_trl.rewards import MemoryBank, encode_images
from rlsyn_trl.settings import SettingsError
from rlsyn_trl.trainers import (
    IdentityDDPOPipeline,
    IdentityReward,
    RLSynDDPOConfig,
    RLSynDDPOTrainer,
    identity_prompt_fn,
)
from rlsyn_trl.trainers.ddpo.config import epoch_layout
from rlsyn_trl.trainers.ddpo.identity_groups import identity_advantages
from rlsyn_trl.trainers.ddpo.pipeline import guided_prediction, label_embeds

torch.set_num_threads(1)
RESOLUTION = 16
HELPER = Path(__file__).with_name("ddpo_processes.py")
sys.path.insert(0, str(HELPER.parent))
from ddpo_processes import build_trainer  # noqa: E402

pytestmark = pytest.mark.precision  # run again with the other precision forced (.ci/run)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, datasets_cache):
    """A tiny base DiT, a cold-start adapter with LoRA for the private ORL identities, and a tiny encoder."""
    os.environ["HF_DATASETS_CACHE"] = datasets_cache
    root = tmp_path_factory.mktemp("ddpo_tiny")
    names = load_identity_dataset("orl_faces", "private", shots=2, seed=0)["train"].features["label"].names
    torch.manual_seed(0)
    transformer = build_pixel_dit(20, resolution=RESOLUTION, width=32, depth=2, heads=2, patch_size=4)
    for parameter in transformer.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    IdentityGenerator(transformer, default_scheduler(), [f"p{i}" for i in range(20)]).save_pretrained(root / "base")
    generator = IdentityGenerator.from_pretrained(root / "base")
    replace_class_embedders(generator, names)
    for embedder in class_embedders(generator.transformer):
        torch.nn.init.normal_(embedder.embedding_table.weight, std=0.5)
    lora = RLSynDDPOConfig(lora_rank=2, lora_target_modules=["attn1.to_q", "attn1.to_v"]).lora_config()
    add_lora(generator, lora)
    for name, parameter in generator.transformer.named_parameters():
        if "lora_B" in name:  # peft starts B at 0; a trained adapter's LoRA changes the outputs
            torch.nn.init.normal_(parameter, std=0.05)
    save_adapter(generator, root / "sft", str(root / "base"), lora_config=lora)
    write_provenance(root / "sft", stage_record("cold_start", {"shots": 2, "split_seed": 0}))  # as a cold start does
    encoder = IdentityEncoder(IdentityEncoderConfig(image_size=RESOLUTION, widths=[8, 16], embedding_size=16))
    encoder.eval().save_pretrained(root / "encoder")
    return {"root": root, "adapter": str(root / "sft"), "encoder": str(root / "encoder"), "names": names}


def tiny_config(tiny, output: Path, **overrides) -> RLSynDDPOConfig:
    options = {
        "adapter": tiny["adapter"],
        "encoder": tiny["encoder"],
        "output_dir": str(output),
        "identities_per_epoch": 4,
        "samples_per_identity": 4,
        "sample_batch_size": 8,
        "train_batch_size": 4,
        "sample_num_steps": 3,
        "train_timestep_fraction": 0.67,  # the 2 steps left once the final one is skipped
        "num_epochs": 2,
        "train_learning_rate": 1e-3,
        "kl_coef": 0.1,
        "denoise_coef": 0.1,
        "denoise_batch_size": 4,
        **overrides,
    }
    return RLSynDDPOConfig(**options)


def trainable(generator: IdentityGenerator) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in generator.transformer.named_parameters() if p.requires_grad}


def test_pipeline_sampling_is_batch_invariant_and_reproduced_by_the_training_pass(tiny):
    pipeline = IdentityDDPOPipeline.from_pretrained(tiny["adapter"])
    labels = torch.tensor([0, 0, 3, 3])
    embeds, negative = label_embeds(labels), label_embeds(torch.full_like(labels, pipeline.generator.null_label))
    seeds = [torch.Generator().manual_seed(i) for i in range(4)]
    whole = pipeline(prompt_embeds=embeds, negative_prompt_embeds=negative, num_inference_steps=3, guidance_scale=2.0,
                     eta=1.0, generator=seeds)  # fmt: skip
    halves = [
        pipeline(prompt_embeds=embeds[i : i + 2], negative_prompt_embeds=negative[i : i + 2], num_inference_steps=3,
                 guidance_scale=2.0, eta=1.0, generator=[torch.Generator().manual_seed(i + k) for k in range(2)])
        for i in (0, 2)
    ]  # fmt: skip
    torch.testing.assert_close(whole.images, torch.cat([half.images for half in halves]), rtol=0, atol=1e-6)
    assert whole.images.shape == (4, 1, RESOLUTION, RESOLUTION) and 0 <= whole.images.min() <= whole.images.max() <= 1
    timesteps = pipeline.scheduler.timesteps
    for j, t in enumerate(timesteps):
        output = guided_prediction(pipeline.unet, whole.latents[j], t.repeat(4), embeds, negative, 2.0, cfg=True)
        step = pipeline.scheduler_step(output, t.repeat(4), whole.latents[j], eta=1.0, prev_sample=whole.latents[j + 1])
        torch.testing.assert_close(step.log_probs, whole.log_probs[j], rtol=0, atol=1e-5)


def test_pipeline_injects_lora_only_when_the_adapter_has_none(tiny):
    continued = IdentityDDPOPipeline.from_pretrained(tiny["adapter"], lora_config=RLSynDDPOConfig().lora_config())
    assert continued.lora_config.r == 2  # the cold-start LoRA is continued, the YAML rank is not used
    assert continued.base_model == str(tiny["root"] / "base")  # the saved RL adapter records the same base
    base = IdentityGenerator.from_pretrained(tiny["root"] / "base")
    replace_class_embedders(base, tiny["names"])
    injected = IdentityDDPOPipeline(
        base, str(tiny["root"] / "base"), lora_config=RLSynDDPOConfig(lora_rank=3).lora_config()
    )
    assert injected.lora_config.r == 3
    names = [n for n, p in injected.generator.transformer.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in names) and all("lora_" in n or "class_embedder" in n for n in names)


def test_epoch_layout_and_config_errors():
    config = RLSynDDPOConfig(identities_per_epoch=4, samples_per_identity=4, sample_batch_size=8)
    assert epoch_layout(config, num_processes=1, num_identities=20) == 2
    assert epoch_layout(config, num_processes=2, num_identities=20) == 1
    with pytest.raises(ValueError, match="not a multiple of sample_batch_size x processes"):
        epoch_layout(config, num_processes=3, num_identities=20)
    with pytest.raises(ValueError, match="knows only 3 identities"):
        epoch_layout(config, num_processes=1, num_identities=3)
    with pytest.raises(ValueError, match="leave it 0"):
        epoch_layout(
            RLSynDDPOConfig(identities_per_epoch=4, sample_batch_size=8, sample_num_batches_per_epoch=3), 1, 20
        )
    with pytest.raises(ValueError, match="G >= 4"):
        RLSynDDPOConfig(samples_per_identity=3)
    with pytest.raises(ValueError, match="per_prompt_stat_tracking"):
        RLSynDDPOConfig(per_prompt_stat_tracking=True)
    with pytest.raises(ValueError, match="reward_weights"):
        RLSynDDPOConfig(reward_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="train_skip_final_steps"):
        RLSynDDPOConfig(sample_num_steps=10, train_timestep_fraction=1.0, train_skip_final_steps=1)


@pytest.mark.parametrize(
    "overrides, flag",
    [
        ({"train_batch_size": -5}, "train_batch_size"),
        ({"sample_batch_size": 0}, "sample_batch_size"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"train_learning_rate": -1e-3}, "train_learning_rate"),
        ({"sample_eta": 0.0}, "sample_eta"),
        ({"shots": 0}, "shots"),
        ({"reward_alpha": -1.0}, "reward_alpha"),
        ({"push_to_hub": True}, "hub_model_id"),
        ({"mixed_precision": "fp32"}, "mixed_precision"),
        ({"sample_num_steps": 3, "train_timestep_fraction": 0.2}, "train_timestep_fraction"),
    ],
)
def test_bad_settings_name_the_flag(overrides, flag):
    with pytest.raises(SettingsError, match=f"--{flag}"):
        RLSynDDPOConfig(**overrides)


def test_trainer_rejects_train_batches_that_split_an_epoch_unevenly(tiny, tmp_path):
    config = tiny_config(tiny, tmp_path, sample_batch_size=8, train_batch_size=8, train_gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="must be divisible by the total train batch size"):
        build_trainer(config)


def test_reward_features_accept_bf16_samples_of_another_size(tiny):
    """Mixed-precision sampling hands the reward bf16 images; they are resized and encoded in float32."""
    encoder = IdentityEncoder.from_pretrained(tiny["encoder"]).eval()
    images = torch.rand(3, 1, 2 * RESOLUTION, 2 * RESOLUTION) * 2 - 1
    features = encode_images(encoder, images.bfloat16())
    assert features.dtype == torch.float32 and features.shape == (3, 16)
    torch.testing.assert_close(features, encode_images(encoder, images.bfloat16().float()))


def test_identity_advantages_centre_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 12.0])
    labels = torch.tensor([5, 5, 5, 5, 2, 2, 2, 2])
    epoch = identity_advantages(rewards, labels, "epoch")
    group = identity_advantages(rewards, labels, "group")
    for advantages in (epoch, group):
        assert advantages[:4].sum().abs() < 1e-5 and advantages[4:].sum().abs() < 1e-5
        assert (advantages[:4].diff() > 0).all() and advantages[7] > 0 > advantages[4]
    assert torch.allclose(group[:4].std(correction=0), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(epoch.std(correction=0), torch.tensor(1.0), atol=1e-5)


def test_identity_prompt_fn_yields_whole_groups():
    prompt = identity_prompt_fn(["a", "b", "c"], group_size=4, seed=0)
    draws = [prompt() for _ in range(12)]
    for start in range(0, 12, 4):
        assert len({name for name, _ in draws[start : start + 4]}) == 1
    assert all(["a", "b", "c"][meta["label"]] == name for name, meta in draws)


def test_stock_ddpo_trainer_drives_the_pipeline(tiny, tmp_path, fresh_accelerate_state):
    from trl import DDPOConfig, DDPOTrainer

    pipeline = IdentityDDPOPipeline.from_pretrained(tiny["adapter"])
    images = torch.rand(8, 1, RESOLUTION, RESOLUTION) * 2 - 1
    reward = IdentityReward.build(
        IdentityEncoder.from_pretrained(tiny["encoder"]),
        images,
        torch.arange(4).repeat(2),
        pipeline.generator.label_names[:4],
    )
    config = DDPOConfig(mixed_precision="no", sample_num_steps=2, sample_batch_size=8, sample_num_batches_per_epoch=1,
                        train_batch_size=4, num_epochs=1, save_freq=100, sample_guidance_scale=2.0)  # fmt: skip
    before = trainable(pipeline.generator)
    # No image hook: the stock trainer hands hooks `accelerator.trackers[0]`, which fails without `log_with`.
    trainer = DDPOTrainer(config, reward, identity_prompt_fn(["s21", "s22", "s23", "s24"], 4), pipeline)
    trainer.train()
    after = trainable(pipeline.generator)
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_trainer_trains_logs_and_saves_a_loadable_adapter(tiny, tmp_path):
    trainer = build_trainer(tiny_config(tiny, tmp_path))
    start = trainable(trainer.sd_pipeline.generator)
    history = trainer.train()
    folder = trainer.save_pretrained()
    assert [record["epoch"] for record in history] == [0, 1]
    for key in ("reward/sem_mean", "reward/z_cov_std", "reward/total_mean", "train/approx_kl", "train/clipfrac",
                "train/kl_ref", "train/denoise_loss", "reward/group_exp_mean"):  # fmt: skip
        assert key in history[-1]
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"reward/exp_mean"' in lines[0]
    assert (tmp_path / "reward_curves.png").is_file() and list((tmp_path / "samples").glob("*.png"))
    assert MemoryBank.load(tmp_path / "memory_bank.safetensors").label_names == tiny["names"]

    loaded = IdentityGenerator.from_pretrained(folder)
    assert loaded.label_names == tiny["names"]
    final = trainable(trainer.sd_pipeline.generator)
    reloaded = trainable(loaded)
    assert set(reloaded) == set(final)
    assert all(torch.equal(reloaded[n], final[n]) for n in final)
    assert any(not torch.equal(start[n], final[n]) for n in final)
    card = (folder / "README.md").read_text()
    assert "DDPO" in card and tiny["adapter"] in card
    # Under bf16 the policy keeps TRL's bf16 copy of the backbone: the fp32 reload samples the same to bf16 rounding.
    tolerance = {} if trainer.accelerator.mixed_precision == "no" else {"rtol": 0, "atol": 0.02}
    torch.testing.assert_close(
        loaded.sample([0, 1], seed=3, num_inference_steps=2),
        trainer.sd_pipeline.generator.sample([0, 1], seed=3, num_inference_steps=2),
        **tolerance,
    )


@pytest.mark.parametrize("reference", [None, "0.5,1.0"])
def test_resume_after_epoch_one_matches_an_uninterrupted_run(tiny, tmp_path, reference):
    options = {"reference_strength": reference, "sample_num_steps": 4} if reference else {}
    uninterrupted = build_trainer(tiny_config(tiny, tmp_path / "a", **options))
    uninterrupted.train()
    stopped = build_trainer(tiny_config(tiny, tmp_path / "b", **options))
    stopped.train(epochs=1)
    assert (tmp_path / "b" / "checkpoints" / "epoch-1").is_dir()
    resumed = build_trainer(tiny_config(tiny, tmp_path / "b", resume_from=str(tmp_path / "b"), **options))
    assert resumed.first_epoch == 1
    resumed.train()
    expected, actual = trainable(uninterrupted.sd_pipeline.generator), trainable(resumed.sd_pipeline.generator)
    assert set(expected) == set(actual)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    assert resumed.global_step == uninterrupted.global_step
    assert resumed.history[-1]["reward/total_mean"] == uninterrupted.history[-1]["reward/total_mean"]


def test_resume_logs_each_epoch_once(tiny, tmp_path):
    """A run killed after logging epoch 2 but before its checkpoint resumes from epoch-2 and logs epoch 2 once."""
    config = tiny_config(tiny, tmp_path, num_epochs=3, save_freq=1)
    build_trainer(config).train(epochs=2)
    metrics = tmp_path / "logs" / "metrics.jsonl"
    stray = {**json.loads(metrics.read_text().splitlines()[-1]), "epoch": 2.0}
    with metrics.open("a") as handle:
        handle.write(json.dumps(stray) + "\n")
    resumed = build_trainer(replace(config, resume_from=str(tmp_path / "checkpoints" / "epoch-2")))
    resumed.train()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [record["epoch"] for record in records] == [0, 1, 2]
    assert records[-1]["reward/total_mean"] == resumed.history[-1]["reward/total_mean"]


class StepRecorder(RLSynDDPOTrainer):
    """Records, for every loss term computed, the trained timesteps, each sample's start and the PPO terms."""

    def __init__(self, *args, **kwargs):
        self.trained = []
        self.sampled = []
        super().__init__(*args, **kwargs)

    def _sample_epoch(self, epoch, labels):
        samples, images = super()._sample_epoch(epoch, labels)
        self.sampled.append({key: value.clone() for key, value in samples.items()})
        return samples, images

    def _loss_terms(self, sample, j):
        terms = super()._loss_terms(sample, j)
        self.trained.append((sample["timesteps"][:, j].clone(), sample["start_steps"].clone(), terms["approx_kl"]))
        return terms


def test_reference_guided_ddpo_samples_and_trains_only_the_truncated_chain(tiny, tmp_path):
    """Strengths drawn per sample in [0.5, 1]: 2 to 4 of the 4 steps remain; 1 step per sample is trained (a
    fraction 0.67 of the shortest chain), always one the sample took, never the skipped final step."""
    config = tiny_config(tiny, tmp_path, sample_num_steps=4, reference_strength="0.5,1.0", num_epochs=1)
    assert config.reference_strength == [0.5, 1.0] and config.trained_timesteps() == 1
    trainer = build_trainer(config, StepRecorder)
    assert trainer.num_train_timesteps == 1 and trainer.accelerator.gradient_accumulation_steps == 1
    trainer.train()
    (sampled,) = trainer.sampled
    starts = sampled["start_steps"]
    assert set(starts.tolist()) <= {0, 1, 2} and len(set(starts.tolist())) > 1
    steps = torch.arange(4)[None, :]
    taken = steps >= starts[:, None]
    assert torch.equal(sampled["log_probs"] != 0, taken) and torch.equal(sampled["ref_log_probs"] != 0, taken)
    # The reference policy equals the starting policy: its log-probs recompute the sampled ones.
    torch.testing.assert_close(sampled["ref_log_probs"], sampled["log_probs"], rtol=0, atol=1e-5)
    schedule = trainer.sd_pipeline.scheduler.timesteps
    for timesteps, sample_starts, _ in trainer.trained:
        columns = torch.tensor([(schedule == t).nonzero().item() for t in timesteps])
        assert ((columns >= sample_starts) & (columns < 4 - config.train_skip_final_steps)).all()
    assert trainer.trained[0][2] < 1e-10  # before any update the recomputed log-probs are the sampled ones


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"sample_num_steps": 3, "reference_strength": 0.4}, "--reference_strength 0.4"),
        ({"sample_num_steps": 10, "reference_strength": "0.3,0.9", "train_timestep_fraction": 0.2},
         "--train_timestep_fraction"),
        ({"reference_strength": "1.2"}, "--reference_strength"),
    ],
)  # fmt: skip
def test_reference_strength_settings_are_checked_against_the_chain(overrides, match):
    with pytest.raises(SettingsError, match=match):
        RLSynDDPOConfig(**overrides)


def test_final_evaluation_reports_an_independent_evaluator_and_uses_reference_starts(tiny, tmp_path):
    from rlsyn_trl.generators import ReferenceStart
    from rlsyn_trl.trainers import evaluate_policies, evaluation_table

    trainer = build_trainer(tiny_config(tiny, tmp_path, num_epochs=1))
    torch.manual_seed(2)
    evaluator = IdentityEncoder(IdentityEncoderConfig(image_size=12, widths=[4], embedding_size=8)).eval()
    policy = trainer.sd_pipeline.generator
    reference = ReferenceStart(trainer.train_images, trainer.train_labels, (0.5, 0.5))
    options = dict(seeds=[0], samples_per_identity=2, num_inference_steps=2, guidance_scale=2.0, eta=1.0)
    evaluation = evaluate_policies(
        {"policy": policy}, trainer.reward, reference=reference,
        evaluator=(evaluator, trainer.train_images, trainer.train_labels), **options,
    )  # fmt: skip
    assert 0 <= evaluation["policy"]["evaluator_consistency"] <= 1
    assert "identity consistency (evaluator)" in evaluation_table(evaluation)
    without = evaluate_policies({"policy": policy}, trainer.reward, **options)
    assert "evaluator_consistency" not in without["policy"]
    assert "(evaluator)" not in evaluation_table(without)
    # With s = 0.5 of 2 steps the chain runs its last step only, from the real image: other samples, same seed.
    assert evaluation["policy"]["sem"] != without["policy"]["sem"]


def test_the_recipe_refuses_phi_as_the_evaluator(tiny, tmp_path):
    from rlsyn_trl.recipes.ddpo import main as run_ddpo

    with pytest.raises(SettingsError, match="--evaluator .* is the reward's feature extractor phi"):
        run_ddpo(tiny_config(tiny, tmp_path / "out", evaluator=tiny["encoder"]))
    assert not (tmp_path / "out").exists()


def test_time_budget_stops_at_an_epoch_boundary_with_a_checkpoint(tiny, tmp_path):
    trainer = build_trainer(tiny_config(tiny, tmp_path, num_epochs=5, save_freq=3, max_minutes=1e-6))
    assert len(trainer.train()) == 1
    assert (tmp_path / "checkpoints" / "epoch-1").is_dir()


def test_push_to_hub_is_private_by_default(tiny, tmp_path):
    class FakeApi:
        def __init__(self):
            self.calls = []

        def create_repo(self, repo_id, repo_type, private, exist_ok):
            self.calls.append(("create", repo_id, private))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, folder_path, repo_id, repo_type, commit_message, ignore_patterns):
            self.calls.append(("upload", Path(folder_path), repo_id))

    trainer = build_trainer(tiny_config(tiny, tmp_path, kl_coef=0.0, denoise_coef=0.0))
    api = FakeApi()
    with pytest.raises(ValueError, match="repo id"):
        trainer.push_to_hub(api=api)
    trainer.push_to_hub("me/ddpo-adapter", api=api)
    assert api.calls[0] == ("create", "me/ddpo-adapter", True)
    assert (api.calls[1][1] / "identity_adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_see_the_same_epoch_rewards_as_one(tiny, tmp_path):
    """accelerate 1.15's `launch --cpu --num_processes 2` starts ONE process; --multi_gpu + ACCELERATE_USE_CPU=1 two."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    args = [tiny["adapter"], tiny["encoder"]]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    for command, output in ((launch, tmp_path / "two"), ([sys.executable], tmp_path / "one")):
        # Reference-guided starts with strengths drawn per sample: each rank draws its own samples' references.
        subprocess.run([*command, str(HELPER), *args, str(output), "0.5,1.0"], env=env, check=True, timeout=600)
    rank0, rank1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    single = torch.load(tmp_path / "one" / "rank0.pt")
    assert (rank0["num_processes"], rank1["num_processes"], single["num_processes"]) == (2, 2, 1)
    for key in ("labels", "sem", "cov", "exp", "z_sem", "z_cov", "z_exp", "total"):
        assert torch.equal(rank0[key], rank1[key]), key
        # float32 sums in another order: relative rounding (a tiny model's set-level term can reach tens)
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-6, msg=key)
    # Each rank trained on its own half of the epoch; synchronised gradients keep their weights identical.
    for name, value in rank0["trainable"].items():
        assert torch.equal(value, rank1["trainable"][name]), name


def test_the_recipe_refuses_an_adapter_trained_on_another_split(tiny, tmp_path, datasets_cache):
    """DDPO reads the split from the adapter's provenance; a contradicting --split_seed stops it before any work."""
    from rlsyn_trl.provenance import DataSplit
    from rlsyn_trl.recipes.ddpo import main as run_ddpo

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny["adapter"], adapter)
    split = DataSplit("orl_faces", "private", None, 2, 0)
    record = stage_record("cold_start", split.record(split.load(cache_dir=datasets_cache)), training={"p_uncond": 0.2})
    write_provenance(adapter, record)
    with pytest.raises(ProvenanceError, match=r"--split_seed 1 contradicts the adapter .*split_seed=0"):
        run_ddpo(tiny_config(tiny, tmp_path / "out", adapter=str(adapter), split_seed=1))
    assert not (tmp_path / "out").exists()


def test_the_recipe_refuses_an_adapter_without_provenance_unless_explicitly_accepted(tiny, tmp_path):
    """Without provenance.json the cold start's split and photos are unknown: refused before any work, naming the
    file and the flag that accepts it."""
    from rlsyn_trl.recipes.ddpo import main as run_ddpo

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny["adapter"], adapter)
    (adapter / "provenance.json").unlink()
    with pytest.raises(ProvenanceError, match=r"has no provenance.json.*--allow_unrecorded_input true"):
        run_ddpo(tiny_config(tiny, tmp_path / "out", adapter=str(adapter)))
    assert not (tmp_path / "out").exists()


def test_ddpo_logs_reward_terms_anchors_and_sample_grids_to_tensorboard(tiny, tmp_path):
    """The stock trainer hands trackers its config nested under one key: tensorboard gets it flattened."""
    pytest.importorskip("tensorboard")
    from conftest import read_events

    trainer = build_trainer(tiny_config(tiny, tmp_path, num_epochs=1, log_with="tensorboard"))
    trainer.train()
    trainer.accelerator.end_training()
    scalars, hparams = read_events(tmp_path / "logs")
    terms = {f"reward/{term}_mean" for term in ("sem", "cov", "exp", "total")}
    anchors = {f"train/{name}" for name in ("policy_loss", "approx_kl", "clipfrac", "kl_ref", "denoise_loss")}
    assert terms | anchors | {"image:samples"} <= scalars
    assert hparams["ddpo_trainer_config/kl_coef"] == 0.1 and "ddpo_trainer_config/lora_target_modules" in hparams


PRECISIONS = ["no", "bf16"]  # both, whatever auto resolves to here: bf16 is emulated (slowly) on an AVX2 CPU


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_ppo_ratio_is_one_before_the_first_update(tiny, tmp_path, fresh_accelerate_state, precision):
    """The training pass recomputes the sampler's log-probs (train_batch_size rows at a time, as it trains) to 1e-5:
    the clipped ratio measures the policy's change, not rounding, under fp32 and bf16 alike."""
    trainer = build_trainer(tiny_config(tiny, tmp_path, mixed_precision=precision, kl_coef=0.0))
    assert trainer.accelerator.mixed_precision == precision
    samples, _ = trainer._sample_epoch(0, trainer.epoch_labels(0))
    size, steps = samples["log_probs"].shape
    assert samples["latents"].dtype == samples["next_latents"].dtype == samples["log_probs"].dtype == torch.float32
    chunk = trainer.config.train_batch_size
    for start in range(0, size, chunk):
        batch = {key: value[start : start + chunk] for key, value in samples.items()}
        for j in range(steps):
            with torch.no_grad():
                recomputed = trainer.policy_log_probs(batch, j)
            torch.testing.assert_close(recomputed, batch["log_probs"][:, j], rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_trained_policy_samples_in_the_process_that_trained_it(tiny, tmp_path, fresh_accelerate_state, precision):
    """Mixed precision leaves a bf16 backbone with float32 LoRA and embedders: the policy still samples, under its
    own autocast, what the saved adapter samples (exactly in fp32, to bf16 rounding in bf16)."""
    trainer = build_trainer(tiny_config(tiny, tmp_path, mixed_precision=precision, num_epochs=1))
    trainer.train()
    policy = trainer.sd_pipeline.generator
    backbone = {p.dtype for n, p in policy.transformer.named_parameters() if not p.requires_grad}
    assert backbone == {torch.bfloat16 if precision == "bf16" else torch.float32}
    in_process = policy.sample([0, 1, 2], seed=3, num_inference_steps=3)
    loaded = IdentityGenerator.from_pretrained(trainer.save_pretrained())
    reloaded = loaded.sample([0, 1, 2], seed=3, num_inference_steps=3)
    assert in_process.dtype == torch.float32 and torch.isfinite(in_process).all()
    if precision == "no":
        torch.testing.assert_close(in_process, reloaded)
    else:
        assert (in_process - reloaded).abs().mean() < 0.02
        assert not torch.equal(in_process, reloaded)  # it did run in bf16


def test_chunked_kl_reference_pass_reproduces_the_sampling_log_probs_before_training(tiny, tmp_path):
    """Before any update the reference is the policy: its log-probs, computed train_batch_size rows at a time over
    all B x T steps, are those the sampler recorded."""
    trainer = build_trainer(tiny_config(tiny, tmp_path, train_batch_size=2))
    samples, _ = trainer._sample_epoch(0, trainer.epoch_labels(0))
    size, steps = samples["log_probs"].shape
    assert samples["ref_log_probs"].shape == (size, steps) and size * steps > trainer.config.train_batch_size
    torch.testing.assert_close(samples["ref_log_probs"], samples["log_probs"], rtol=0, atol=1e-5)


def test_the_recipe_card_reports_the_measured_evaluation(tiny, tmp_path):
    """With eval_seeds, the saved card's model-index holds the cold start vs RL results of evaluation.json."""
    import json

    from huggingface_hub import ModelCard

    from rlsyn_trl.recipes.ddpo import main as run_ddpo

    output = tmp_path / "out"
    run_ddpo(tiny_config(tiny, output, num_epochs=1, eval_seeds=[0], eval_samples_per_identity=2))
    evaluation = json.loads((output / "evaluation.json").read_text())
    results = {r.metric_name: r.metric_value for r in ModelCard.load(output / "README.md").data.eval_results}
    assert results["DDPO: identity consistency"] == round(evaluation["DDPO"]["consistency"], 4)
    assert results["cold start: face detection rate"] == round(evaluation["cold start"]["face_rate"], 4)


def test_a_diverged_policy_stops_before_it_is_saved(tiny, tmp_path):
    """A learning rate that blows the policy up stops the run at the epoch it happens, with the fix; the recipe then
    writes no adapter (and generation would refuse its NaN samples: tests/test_generation.py)."""
    from rlsyn_trl.recipes.ddpo import main as run_ddpo
    from rlsyn_trl.trainers.training import TrainingDiverged

    config = tiny_config(tiny, tmp_path / "out", train_learning_rate=1e30, embedder_learning_rate=1e30, save_freq=1)
    with pytest.raises(TrainingDiverged, match=r"DDPO epoch \d: .* not finite .*Lower train_learning_rate \(1e\+30\)"):
        run_ddpo(config)
    assert not (tmp_path / "out" / "provenance.json").exists()


def test_a_policy_broken_by_its_last_update_is_not_saved(tiny, tmp_path):
    """Weights of 1e9 (what one update at learning rate 1e9 leaves) are finite, but the policy's samples are not
    images: the check before saving refuses it (each epoch's samples are checked before they are scored)."""
    from rlsyn_trl.trainers.training import TrainingDiverged

    trainer = build_trainer(tiny_config(tiny, tmp_path / "out", num_epochs=1))
    trainer.train()
    trainer.save_pretrained(tmp_path / "working")  # the trained policy samples images
    for parameter in trainer.sd_pipeline.unet.parameters():
        if parameter.requires_grad:
            parameter.data.fill_(1e9)
    with pytest.raises(TrainingDiverged, match=r"trained DDPO policy's samples: 4 of 4 samples are non-finite"):
        trainer.save_pretrained(tmp_path / "broken")
    assert (tmp_path / "working" / "identity_lora.safetensors").exists() and not (tmp_path / "broken").exists()


def test_a_resume_from_another_adapter_is_refused(tiny, tmp_path):
    """Continuing a checkpoint under another --adapter gave its weights and named the other adapter as parent."""
    build_trainer(tiny_config(tiny, tmp_path / "ref", num_epochs=1, save_freq=1)).train()
    other = tmp_path / "another_sft"
    shutil.copytree(tiny["adapter"], other)
    tables = other / "identity_embedders.safetensors"
    from safetensors.torch import load_file, save_file

    save_file({name: table + 1 for name, table in load_file(tables).items()}, tables)  # another cold start
    resumed = tiny_config(tiny, tmp_path / "b", adapter=str(other), resume_from=str(tmp_path / "ref"))
    with pytest.raises(
        ValueError, match=r"Cannot resume from .*epoch-1: .*adapter_content: 'sha256:\w+' there, 'sha256:\w+' now"
    ):
        build_trainer(resumed)
    same = build_trainer(tiny_config(tiny, tmp_path / "c", num_epochs=2, resume_from=str(tmp_path / "ref")))
    assert same.first_epoch == 1  # the same adapter, more epochs: resumed
