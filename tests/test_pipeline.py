import json

import pytest

from rlsyn_trl.cli import main


@pytest.mark.slow
def test_quick_main_job_end_to_end(tmp_path, capsys):
    """CI's end-to-end run: every stage of the chain on the embedded default, with few steps."""
    assert main(["main", "--quick", "--output-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    methods = [row["method"] for row in results["rows"]]
    assert methods == [
        "raw-pixel 1-NN",
        "real only",
        "real + standard augmentation",
        "+ cold-start synthetic",
        "full method (RL synthetic + selection)",
    ]
    assert all(0 <= row["accuracy"] <= 1 for row in results["rows"])
    for row in results["rows"][3:]:
        assert 0 <= row["identity_consistency"] <= 1 and 0 <= row["face_detection_rate"] <= 1
    assert (tmp_path / "results.md").read_text().count("|") > 20
    assert (tmp_path / "ddpo" / "adapter_config.json").is_file()
    assert "full method" in capsys.readouterr().out
