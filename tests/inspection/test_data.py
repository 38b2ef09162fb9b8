"""The data the inspection app shows: loading with the real split, ordering, filters and the flagged pairs."""

from __future__ import annotations

import datasets
import pytest
from synthetic_fixtures import COPY_IDENTITY, COPY_SAMPLE, IDENTITIES, PER_IDENTITY

from rlsyn_trl.inspection import (
    identity_names,
    load_inspection,
    nearest_pairs,
    real_photos,
    sample_caption,
    score_table,
    select_samples,
    summary_markdown,
)
from rlsyn_trl.provenance import ProvenanceError


@pytest.fixture(scope="module")
def inspection(inspected_run, datasets_cache):
    return load_inspection(inspected_run[0], cache_dir=datasets_cache)


def test_loads_samples_audit_and_the_audited_real_split(inspection, inspected_run, datasets_cache, orl_private):
    assert len(inspection.samples) == len(IDENTITIES) * PER_IDENTITY
    assert inspection.real is not None and inspection.real["label"] == orl_private["train"]["label"]
    assert inspection.thresholds["source"] == "private" and not inspection.notes
    assert identity_names(inspection) == IDENTITIES
    # The run's dataset/ and hub/ folders load alike, with the summary that travels with them.
    for folder in ("dataset", "hub"):
        other = load_inspection(inspected_run[0] / folder, cache_dir=datasets_cache)
        assert other.samples["sample_id"] == inspection.samples["sample_id"] and other.audit == inspection.audit


def test_real_photos_are_the_identity_rows_of_the_training_split(inspection, orl_private):
    photos = real_photos(inspection, "s21")
    train = orl_private["train"]
    expected = [row for row, label in enumerate(train["label"]) if label == train.features["label"].str2int("s21")]
    assert [caption for _, caption in photos] == [f"real s21, train row {row}" for row in expected]
    assert len(photos) == 2 and real_photos(inspection, "nobody") == []


def test_ordering_is_by_the_chosen_score_with_stable_ties(inspection):
    samples = inspection.samples
    rows = select_samples(samples, "s21", sort_by="reward")
    assert sorted(rows) == [0, 1, 2]
    rewards = [samples["reward"][row] for row in rows]
    assert rewards == sorted(rewards, reverse=True)
    ascending = select_samples(samples, None, sort_by="nn_real_distance", descending=False)
    distances = [samples["nn_real_distance"][row] for row in ascending]
    assert len(ascending) == len(samples) and distances == sorted(distances)
    assert ascending[0] == COPY_SAMPLE  # the planted copy is the closest to a real photo
    flags = select_samples(samples, None, sort_by="memorized")  # booleans sort too; ties keep row order
    assert flags[0] == COPY_SAMPLE and flags[1:] == sorted(flags[1:])


def test_filters_by_flag_and_score_range(inspection):
    samples = inspection.samples
    assert select_samples(samples, "s21", flagged_only=True) == [COPY_SAMPLE]
    assert select_samples(samples, "s23", flagged_only=True) == []
    median = sorted(samples["reward"])[len(samples) // 2]
    high = select_samples(samples, None, ranges={"reward": (median, None)})
    assert high and all(samples["reward"][row] >= median for row in high)
    assert set(high) | set(select_samples(samples, None, ranges={"reward": (None, median)})) == set(range(len(samples)))
    no_face = select_samples(samples, None, flags={"face_detected": False}, sort_by="sample_id", descending=False)
    assert no_face == [row for row, face in enumerate(samples["face_detected"]) if not face]
    with pytest.raises(ValueError, match="Cannot sort or filter by 'image'"):
        select_samples(samples, None, sort_by="image")


def test_an_exact_copy_is_paired_with_its_real_photo_under_the_threshold(inspection, inspected_run, orl_private):
    _, copied_row = inspected_run
    rows = select_samples(inspection.samples, "s21", flagged_only=True)
    (pair,) = nearest_pairs(inspection, rows)
    assert (pair.sample_row, pair.real_row, pair.space) == (COPY_SAMPLE, copied_row, "pixel")
    assert pair.identity == "s21" and pair.real_identity == COPY_IDENTITY
    assert pair.threshold == inspection.thresholds["pixel"] and pair.distance < 0.01 < pair.threshold
    assert nearest_pairs(inspection, select_samples(inspection.samples, "s23")) == [
        pair for pair in nearest_pairs(inspection, range(6, 9))
    ]
    caption = sample_caption(inspection.samples[COPY_SAMPLE])
    assert "MEMORISED (pixel" in caption and "reward" in caption and f"#{COPY_SAMPLE}" in caption


def test_summary_reads_the_rate_against_the_floor(inspection):
    text = summary_markdown(inspection)
    rate = inspection.audit["audit"]["memorization"]["rate"]
    assert f"Memorisation rate {100 * rate:.1f}%" in text and "held-out real floor" in text
    assert "Identity consistency" in text and "face detected" in text


def test_without_provenance_no_real_photos_and_a_note(inspected_run, datasets_cache, tmp_path):
    bare = tmp_path / "bare"
    datasets.load_from_disk(str(inspected_run[0] / "dataset")).save_to_disk(str(bare))
    inspection = load_inspection(bare, cache_dir=datasets_cache)
    assert inspection.real is None and inspection.audit is None and len(inspection.notes) == 2
    assert real_photos(inspection, "s21") == []
    (pair,) = nearest_pairs(inspection, [COPY_SAMPLE])
    assert pair.real_identity is None and pair.threshold is None
    assert "no real photos" in summary_markdown(inspection)


def test_a_dataset_of_another_tool_is_refused(tmp_path, datasets_cache):
    datasets.Dataset.from_dict({"image": ["x.png"], "identity": ["a"]}).save_to_disk(str(tmp_path / "other"))
    with pytest.raises(ValueError, match="not a dataset written by `rlsyn-trl generate`"):
        load_inspection(tmp_path / "other", cache_dir=datasets_cache)


def test_changed_real_images_are_refused(inspected_run, datasets_cache, tmp_path):
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(inspected_run[0] / "dataset", copy)
    record = json.loads((inspected_run[0] / "provenance.json").read_text())
    record["data"]["fingerprint"] = "0" * 20
    (copy / "provenance.json").write_text(json.dumps(record))
    with pytest.raises(ProvenanceError, match="differ from those"):
        load_inspection(copy, cache_dir=datasets_cache)


def test_score_table_follows_the_shown_order(inspection):
    rows = select_samples(inspection.samples, None, sort_by="nn_real_distance", descending=False)
    table = score_table(inspection.samples, rows)
    assert [line[0] for line in table] == [inspection.samples["sample_id"][row] for row in rows]
    assert table[0][-1].startswith("pixel") and all(line[-1] == "" for line in table if not line[-4])
    assert score_table(inspection.samples, []) == []


def test_a_hub_id_loads_from_the_local_cache_with_its_real_split(inspected_run, datasets_cache, tmp_path, monkeypatch):
    """``rlsyn-trl inspect owner/name`` offline: the pushed layout (hub/) from the cache, audit and real split too."""
    from conftest import put_in_hf_cache

    cache = tmp_path / "hf_cache"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    put_in_hf_cache(inspected_run[0] / "hub", "owner/synthetic", cache, repo_type="dataset")
    inspection = load_inspection("owner/synthetic", cache_dir=datasets_cache)
    assert inspection.real is not None and inspection.thresholds is not None and not inspection.notes
    (pair,) = nearest_pairs(inspection, [COPY_SAMPLE])
    assert pair.real_row == inspected_run[1]


def test_real_files_missing_here_show_the_samples_with_a_note(inspected_run, datasets_cache, tmp_path):
    import json
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(inspected_run[0] / "dataset", copy)
    record = json.loads((inspected_run[0] / "provenance.json").read_text())
    record["data"].update(dataset_name="market1501", dataset_config=None, shots=None, split_seed=None)
    (copy / "provenance.json").write_text(json.dumps(record))
    inspection = load_inspection(copy, cache_dir=datasets_cache, data_dir=str(tmp_path / "absent"))
    assert inspection.real is None and len(inspection.samples) == len(IDENTITIES) * PER_IDENTITY
    assert "pass --data-dir" in inspection.notes[-1] and "market1501" in inspection.notes[-1]
