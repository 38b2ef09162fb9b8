"""The contract between the stages: splits read from the input artefact, contradictions and leaks refused."""

import pytest

from rlsyn_trl.provenance import (
    DataSplit,
    ProvenanceError,
    check_no_leak,
    check_same_train_images,
    inherit_settings,
    lineage,
    load_input_split,
    parent_reference,
    read_provenance,
    resolve_data_split,
    seen_images,
    stage_record,
    write_provenance,
)
from rlsyn_trl.settings import REWARD_FIELDS, DataSplitSettings, RewardSettings


@pytest.fixture(scope="module")
def splits(datasets_cache):
    """The 1-shot and 2-shot private ORL splits of split seed 0, resolved and loaded."""
    result = {}
    for shots in (1, 2):
        split = resolve_data_split(DataSplitSettings(shots=shots))
        result[shots] = (split, split.load(cache_dir=datasets_cache))
    return result


def test_unset_fields_come_from_the_artefact_then_the_dataset_defaults(splits):
    split, data = splits[2]
    record = split.record(data)
    assert record["shots"] == 2 and len(record["train_images"]) == 40 == record["num_train_images"]
    inherited = resolve_data_split(DataSplitSettings(), record, "the adapter")
    assert (inherited.dataset_name, inherited.dataset_config, inherited.shots, inherited.split_seed) == (
        "orl_faces",
        "private",
        2,
        0,
    )
    defaults = resolve_data_split(DataSplitSettings())
    assert (defaults.dataset_config, defaults.split_seed) == ("private", 0)


def test_a_contradicting_split_is_refused_with_both_values(splits):
    split, data = splits[2]
    with pytest.raises(ProvenanceError, match=r"--split_seed 1 contradicts the adapter X, .*split_seed=0"):
        resolve_data_split(DataSplitSettings(split_seed=1), split.record(data), "the adapter X")
    with pytest.raises(ValueError, match="shots"):  # a bad value fails before anything is built
        resolve_data_split(DataSplitSettings(shots=7))


def test_a_stage_reads_its_inputs_split_onto_its_settings(splits, datasets_cache, tmp_path):
    """The one preamble of the stages after the cold start: the settings end up holding the split used."""
    split, data = splits[2]
    write_provenance(tmp_path, stage_record("cold_start", split.record(data)))
    settings = DataSplitSettings()
    record, resolved, loaded, data_record = load_input_split(settings, tmp_path, "the adapter", datasets_cache)
    assert record["stage"] == "cold_start" and resolved == split and data_record == split.record(data)
    assert (settings.dataset_name, settings.dataset_config, settings.shots, settings.split_seed) == (
        "orl_faces",
        "private",
        2,
        0,
    )
    assert len(loaded["train"]) == 40
    with pytest.raises(ProvenanceError, match="--shots 1 contradicts the adapter"):
        load_input_split(DataSplitSettings(shots=1), tmp_path, "the adapter", datasets_cache)
    one, one_data = splits[1]
    write_provenance(tmp_path, stage_record("cold_start", {**one.record(one_data), "shots": 2}))
    with pytest.raises(ProvenanceError, match="differ from those the adapter was trained on"):
        load_input_split(DataSplitSettings(), tmp_path, "the adapter", datasets_cache)


def test_other_training_images_are_refused(splits):
    (one, one_data), (two, two_data) = splits[1], splits[2]
    check_same_train_images(two.record(two_data), two.record(two_data), "the adapter")
    with pytest.raises(ProvenanceError, match="differ from those the adapter was trained on"):
        check_same_train_images(two.record(two_data), one.record(one_data), "the adapter")


def test_a_generator_that_saw_test_photos_is_refused(splits, tmp_path):
    (one, one_data), (two, two_data) = splits[1], splits[2]
    cold_start = stage_record("cold_start", two.record(two_data))
    dataset = stage_record("generation", two.record(two_data), parent={"id": "adapter", "provenance": cold_start})
    with pytest.raises(ProvenanceError, match=r"shots=2, split_seed=0.* 20 of the 180 evaluation images"):
        check_no_leak(dataset, one_data, one, "The synthetic dataset")
    check_no_leak(dataset, two_data, two, "The synthetic dataset")  # the generator's own split: no test photo seen
    with pytest.raises(ProvenanceError, match="no provenance.json"):
        check_no_leak(None, one_data, one, "The synthetic dataset")
    write_provenance(tmp_path, dataset)
    assert read_provenance(tmp_path) == dataset
    assert [item["stage"] for item in lineage(read_provenance(tmp_path))] == ["generation", "cold_start"]
    assert len(seen_images(dataset)) == 40


def test_reward_settings_follow_the_policy(tmp_path):
    trained = {"weights": [1.0, 0.75, 0.25], "alpha": 0.5, "sigma": None, "eps": 0.1, "tau": 0.25}
    assert inherit_settings(RewardSettings(), trained, REWARD_FIELDS, "the policy") == trained
    assert inherit_settings(RewardSettings(reward_tau=0.25), trained, REWARD_FIELDS, "the policy") == trained
    with pytest.raises(ProvenanceError, match=r"--reward_alpha 0.9 differs from the policy, which records alpha=0.5"):
        inherit_settings(RewardSettings(reward_alpha=0.9), trained, REWARD_FIELDS, "the policy")
    parent = parent_reference("some/adapter", tmp_path)
    assert parent["id"] == "some/adapter" and parent["revision"].startswith("sha256:") and parent["provenance"] is None


def test_a_damaged_provenance_file_is_named(tmp_path):
    from rlsyn_trl.provenance import PROVENANCE_FILE, read_provenance
    from rlsyn_trl.utils.io import DamagedFileError

    (tmp_path / PROVENANCE_FILE).write_text('{"format": "rlsyn-trl/provenance", "data": ')  # cut short
    with pytest.raises(DamagedFileError, match=rf"{PROVENANCE_FILE} should hold a provenance record but is not valid"):
        read_provenance(tmp_path)


def test_public_split_keeps_the_source_and_refuses_a_shared_identity(orl_private, datasets_cache):
    split = DataSplit("orl_faces", "private", None, 2, 0)
    assert split.public("public") == DataSplit("orl_faces", "public", None, None, None)
    public = split.load_public("public", orl_private["train"], cache_dir=datasets_cache)
    assert len(public) == 200 and public.features["label"].names[0] == "s1"
    with pytest.raises(ValueError, match="20 of the 20 identities of orl_faces/private .* are also in orl_faces/priv"):
        DataSplit("orl_faces", "private", None, 3, 0).load_public("private", orl_private["train"], datasets_cache)
