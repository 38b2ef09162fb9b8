import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from rlsyn_trl.cli import main
from rlsyn_trl.generation import GenerationConfig
from rlsyn_trl.job.comparison import recognizer_rows
from rlsyn_trl.job.pipeline import (
    MainJobConfig,
    cold_start_settings,
    ddpo_runs,
    ddpo_settings,
    generation_runs,
    generation_settings,
    reference_rows,
)
from rlsyn_trl.trainers import ColdStartConfig, RLSynDDPOConfig
from rlsyn_trl.utils.checks import SettingsError


@pytest.mark.slow
def test_quick_main_job_end_to_end(tmp_path, capfd):
    """CI's end-to-end run: every stage of the chain on the embedded default, with few steps, as two data-parallel
    processes (what ``auto`` starts on a 2-core CPU), each row over two recognizer seeds; the ablation then reuses its
    stages in this one process."""
    assert main(["main", "--quick", "--output-dir", str(tmp_path), "--processes", "2", "--recognizer_seeds", "2"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    methods = [row["method"] for row in results["rows"]]
    assert methods == [
        "raw-pixel 1-NN",
        "real only",
        "real + standard augmentation",
        "full method (RL synthetic + selection)",
    ]
    assert not (tmp_path / "synthetic_cold_start").exists()  # the cold-start samples are the ablation's
    assert all(0 <= row["accuracy"] <= 1 for row in results["rows"])
    for row in results["rows"][1:]:  # each trained row: the mean of its seeds, its own recognizer per seed
        assert row["seeds"] == [0, 1] and row["accuracy"] == pytest.approx(sum(row["accuracies"]) / 2)
    assert sorted(path.name for path in (tmp_path / "recognizer" / "full_method").iterdir()) == ["seed0", "seed1"]
    full = results["rows"][-1]
    gains = [100 * (a - b) for a, b in zip(full["accuracies"], results["rows"][2]["accuracies"], strict=True)]
    assert full["gain_over_augmentation"] == pytest.approx(sum(gains) / 2) and "gain_standard_error" in full
    for row in results["rows"][3:]:
        assert 0 <= row["identity_consistency"] <= 1 and 0 <= row["face_detection_rate"] <= 1
        assert 0 <= row["evaluator_consistency"] <= 1  # the recipe's independent evaluator, never the reward's phi
    assert (tmp_path / "results.md").read_text().count("|") > 20
    assert results["recognizer_model"] == "embedded:orl_faces/encoder"  # the better real-only start, every row
    assert "public feature extractor" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "ddpo" / "identity_adapter_config.json").is_file()
    out = capfd.readouterr().out
    assert out.count("Reading: the full method") == 1  # the main process reports, the other one does not
    assert "full method" in out and str(tmp_path / "results.md") in out and "Time: cold start" in out
    assert "Time budgets: no stage was cut short" in out and "Reading: the full method reaches" in out
    assert results["budget_cuts"] == []
    assert set(results["timings_s"]) == {"cold_start", "ddpo", "generation", "recognizers"}

    # The ablation reuses the finished stages and adds DDPO runs with reward terms switched on in turn.
    adapter = (tmp_path / "ddpo" / "identity_lora.safetensors").read_bytes()
    assert main(["main", "--quick", "--ablation", "--output-dir", str(tmp_path), "--processes", "1"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert all(row.get("seeds", [0]) == [0] for row in rows)  # one recognizer seed: the folders as before
    assert (tmp_path / "recognizer" / "full_method" / "test_results.json").is_file()
    ablation_rows = ["+ cold-start synthetic", "+ selection", "+ R_sem", "+ R_cov"]
    assert [row["method"] for row in rows] == [*methods[:3], *ablation_rows, methods[3]]
    assert (tmp_path / "ddpo" / "identity_lora.safetensors").read_bytes() == adapter  # reused, not trained again
    for name, weights in (("rl_sem", [1.0, 0.0, 0.0]), ("rl_sem_cov", [1.0, 0.75, 0.0])):
        adapter = json.loads((tmp_path / f"ddpo_{name}" / "identity_adapter_config.json").read_text())
        assert adapter["reward"]["weights"] == weights


@pytest.mark.parametrize("quick", [False, True])
def test_main_job_runs_the_embedded_recipes(tmp_path, quick):
    """The main job's stages use recipes/orl_faces/*.yaml (one source of truth), only split and paths change."""
    config = MainJobConfig(output_dir=str(tmp_path), shots=1, split_seed=3, seed=5, quick=quick).scaled()
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "orl_faces"
    sft = ColdStartConfig(**cold_start_settings(config, tmp_path / "sft"))
    ddpo = RLSynDDPOConfig(**ddpo_settings(config, tmp_path / "sft", tmp_path / "ddpo"))
    generation = GenerationConfig(**generation_settings(config, tmp_path / "sft", tmp_path / "synthetic"))
    sft_yaml, ddpo_yaml = (yaml.safe_load((recipes / f"{stage}.yaml").read_text()) for stage in ("sft", "ddpo"))
    assert (sft.shots, sft.split_seed, sft.seed, ddpo.seed) == (1, 3, 5, 5)
    assert (ddpo.shots, ddpo.split_seed, generation.shots) == (None, None, None)  # read from the adapter
    assert ddpo.adapter == str(tmp_path / "sft") and generation.adapter == str(tmp_path / "sft")
    assert (sft.learning_rate, sft.lora_rank, sft.mixed_precision) == (
        sft_yaml["learning_rate"],
        sft_yaml["lora_rank"],
        sft_yaml.get("mixed_precision", "no"),
    )
    assert (ddpo.denoise_coef, ddpo.reward_tau, ddpo.train_learning_rate) == (
        ddpo_yaml["denoise_coef"],
        ddpo_yaml["reward_tau"],
        ddpo_yaml["train_learning_rate"],
    )
    if quick:
        assert sft.max_steps < sft_yaml["max_steps"] and ddpo.num_epochs == 1
    else:
        assert (sft.max_steps, ddpo.num_epochs) == (sft_yaml["max_steps"], ddpo_yaml["num_epochs"])
        # The synthetic datasets are drawn with the chain the RL policy was trained on, at generate.yaml's guidance.
        generate_yaml = yaml.safe_load((recipes / "generate.yaml").read_text())
        assert (generation.num_inference_steps, generation.eta, generation.guidance_scale) == (
            ddpo_yaml["sample_num_steps"],
            ddpo_yaml["sample_eta"],
            generate_yaml["guidance_scale"],
        )


def test_the_synthetic_datasets_take_the_jobs_own_sampler_when_given(tmp_path):
    """--guidance_scale, --guidance_interval and --inference_steps replace DDPO's chain in the generation stages
    only."""
    config = MainJobConfig(output_dir=str(tmp_path), guidance_scale=1.5, guidance_interval="0.5,1", inference_steps=30)
    generation = GenerationConfig(**generation_settings(config, tmp_path / "sft", tmp_path / "synthetic"))
    ddpo = RLSynDDPOConfig(**ddpo_settings(config, tmp_path / "sft", tmp_path / "ddpo"))
    ddpo_yaml = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/orl_faces/ddpo.yaml").read_text())
    assert MainJobConfig().guidance_scale != 1.5  # the value given, not the default
    assert (generation.guidance_scale, generation.num_inference_steps, generation.eta) == (1.5, 30, 0.0)
    assert generation.guidance_options() == {"guidance_scale": 1.5, "guidance_interval": (0.5, 1.0)}
    assert ddpo.sample_guidance_scale == ddpo_yaml["sample_guidance_scale"]
    with pytest.raises(SettingsError, match="guidance_scale"):
        MainJobConfig(guidance_scale=-1.0)
    with pytest.raises(SettingsError, match="guidance_interval"):
        MainJobConfig(guidance_interval="1,0")


def test_recognizer_start_is_checked_and_matches_the_recipe():
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "recipes/orl_faces/recognizer.yaml").read_text())
    assert MainJobConfig().recognizer_model == recipe["model"] == "embedded:orl_faces/encoder"
    assert MainJobConfig(recognizer_start="scratch").recognizer_model == "resnet-tiny"
    with pytest.raises(ValueError, match="recognizer_start"):
        MainJobConfig(recognizer_start="imagenet")


def test_bad_split_options_fail_before_any_stage(tmp_path, capsys):
    """``--shots 7`` used to fail deep in a datasets traceback once the stages had started; now argparse refuses it."""
    with pytest.raises(SystemExit) as exit_info:
        main(["main", "--shots", "7", "--output-dir", str(tmp_path / "job")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "orl_faces/private: shots=7 is not allowed" in error and "one of 1, 2, 3, 5" in error
    assert not (tmp_path / "job").exists()
    with pytest.raises(ValueError, match=r"seed=-1 is not allowed.*integer >= 0"):
        MainJobConfig(split_seed=-1)
    with pytest.raises(ValueError, match=r"shots=4 is not allowed"):
        MainJobConfig(shots=4)


def test_reference_guided_rows_plan_valid_stage_settings(tmp_path):
    """Each strength adds a cold-start generation, a DDPO run on the truncated chain and their rows; every stage's
    settings parse (the truncated chain leaves steps to train in the quick and the full job alike)."""
    config = MainJobConfig(output_dir=str(tmp_path), reference_strengths=[0.6, 0.8], paper_rows=False)
    assert ddpo_runs(config) == {"rl_ref0.6": {"reference_strength": 0.6}, "rl_ref0.8": {"reference_strength": 0.8}}
    assert generation_runs(config) == {
        "cold_start_ref0.6": ("cold_start", {"reference_strength": 0.6}),
        "rl_ref0.6": ("rl_ref0.6", {"reference_strength": 0.6}),
        "cold_start_ref0.8": ("cold_start", {"reference_strength": 0.8}),
        "rl_ref0.8": ("rl_ref0.8", {"reference_strength": 0.8}),
    }
    rows = recognizer_rows(False, paper_rows=False) + reference_rows(config)
    assert [method for method, _, _ in rows] == [
        "real only",
        "real + standard augmentation",
        "+ reference-guided cold start s=0.6",
        "+ reference-guided DDPO s=0.6 + selection",
        "+ reference-guided cold start s=0.8",
        "+ reference-guided DDPO s=0.8 + selection",
    ]
    assert {source for _, source, _ in rows if source} <= set(generation_runs(config))
    for quick in (False, True):
        job = replace(config, quick=quick).scaled()
        for name, overrides in ddpo_runs(job).items():
            ddpo = RLSynDDPOConfig(**{**ddpo_settings(job, tmp_path / "sft", tmp_path / name), **overrides})
            assert ddpo.trained_timesteps() >= 1 and ddpo.reference_strength == overrides["reference_strength"]
        for name, (_, overrides) in generation_runs(job).items():
            settings = {**generation_settings(job, tmp_path / "sft", tmp_path / name), **overrides}
            assert (
                GenerationConfig(**settings).sampler_options()["reference_strength"] == overrides["reference_strength"]
            )
    default = MainJobConfig()  # the main comparison: one synthetic set, the full method's
    assert list(generation_runs(default)) == ["rl"] and list(ddpo_runs(default)) == ["rl"]
    for ablation in (False, True):
        job = replace(default, ablation=ablation)
        assert {source for _, source, _ in recognizer_rows(ablation) if source} == set(generation_runs(job))
    with_paper = MainJobConfig(ablation=True, reference_strengths=[0.6], reference_ddpo=False)
    assert list(ddpo_runs(with_paper)) == ["rl_sem", "rl_sem_cov", "rl"]
    assert list(generation_runs(with_paper)) == ["cold_start", "rl_sem", "rl_sem_cov", "rl", "cold_start_ref0.6"]
    with pytest.raises(ValueError, match="--reference_strengths 1.5"):
        MainJobConfig(reference_strengths=[1.5])
    with pytest.raises(ValueError, match="paper_rows"):
        MainJobConfig(paper_rows=False)


def test_the_rows_refuse_a_stage_record_written_for_other_rows(tmp_path):
    """stages=recognizers must not pair rows with synthetic sets the record does not hold."""
    from dataclasses import asdict

    from rlsyn_trl.job.pipeline import STAGE_RECORD, read_stage_record

    written = MainJobConfig(output_dir=str(tmp_path))
    (tmp_path / STAGE_RECORD).write_text(json.dumps({"config": asdict(written)}))
    assert read_stage_record(written, tmp_path)["config"]["shots"] == 1
    with pytest.raises(ValueError, match="reference_strengths"):
        read_stage_record(replace(written, reference_strengths=[0.4]), tmp_path)
    with pytest.raises(FileNotFoundError, match="stages=all"):
        read_stage_record(written, tmp_path / "empty")
