"""The inspection app in a real browser: headless Chromium (the system package) driven by Playwright.

Skipped only where no Chromium executable exists (CI installs one). Set RLSYN_TRL_SCREENSHOTS=docs/images to
refresh the README's screenshot (``inspect.png``); otherwise it is written to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from synthetic_fixtures import COPY_IDENTITY, COPY_SAMPLE

from rlsyn_trl.inspection import load_inspection
from rlsyn_trl.inspection.app import DEFAULT_HOST, build_app, launch
from rlsyn_trl.inspection.data import TABLE_COLUMNS

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """The system Chromium (Debian's ``chromium`` package, or Chrome), never a browser downloaded by Playwright."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((DEFAULT_HOST, 0))
        return probe.getsockname()[1]


@pytest.fixture
def chromium():
    """The browser's executable; the test is skipped, with the reason, only where none is installed."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("No Chromium executable on PATH (apt-get install chromium): the browser test cannot run.")
    return executable


@pytest.fixture
def served_app(chromium, inspected_run, datasets_cache):
    inspection = load_inspection(inspected_run[0], cache_dir=datasets_cache)
    demo = build_app(inspection)
    port = free_port()
    launch(demo, port=port, block=False)
    yield f"http://{DEFAULT_HOST}:{port}/"
    demo.close()


def test_identity_flagged_only_and_the_nearest_real_pair_in_a_browser(chromium, served_app, inspected_run, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    _, copied_row = inspected_run
    with sync_playwright() as playwright:
        expect.set_options(timeout=30_000)  # a loaded 2-core machine takes seconds per update
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served_app)
            expect(page.locator("#summary")).to_contain_text("Memorisation rate")

            def pick(identity: str) -> None:
                page.locator("#identity input").click()
                page.get_by_role("option", name=identity, exact=True).click()

            pick(COPY_IDENTITY)  # another identity first: its own two real photos and three samples
            expect(page.locator("#real-photos img")).to_have_count(2)
            expect(page.locator("#samples img")).to_have_count(3)
            pick("s21")  # the identity whose sample 1 is a copy of a real photo of s22
            expect(page.locator("#samples img")).to_have_count(3)
            expect(page.locator("#real-photos img")).to_have_count(2)
            page.locator("#flagged-only input[type=checkbox]").check()
            expect(page.locator("#samples img")).to_have_count(1)
            expect(page.locator("#scores")).to_contain_text("pixel")  # the memorized_by cell of the copy
            pairs = page.locator("#pairs")
            expect(pairs.locator("img")).to_have_count(2)  # the flagged sample and its nearest real photo
            expect(pairs).to_contain_text(f"sample #{COPY_SAMPLE} (s21)")
            expect(pairs).to_contain_text(f"nearest real: {COPY_IDENTITY}, train row {copied_row}")
            expect(pairs).to_contain_text("pixel distance")
            expect(pairs).to_contain_text("< threshold")
            target = Path(os.environ.get("RLSYN_TRL_SCREENSHOTS") or tmp_path) / "inspect.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target), full_page=True)
            assert target.stat().st_size > 10_000
        finally:
            browser.close()


def test_dataset_view_combines_the_controls(inspected_run, datasets_cache):
    """What one setting of the controls shows, without a browser: blank bounds are open, a bad bound is refused."""
    from rlsyn_trl.inspection.app import dataset_view

    inspection = load_inspection(inspected_run[0], cache_dir=datasets_cache)
    real, samples, count, table, pairs = dataset_view(
        inspection, "s21", "reward", True, True, "reward", "", " ", False, False
    )
    assert len(real) == 2 and len(samples) == 1 and count.startswith("1 sample(s)")
    assert (
        table[0][0] == COPY_SAMPLE and table[0][-1].startswith("pixel") and table[0][TABLE_COLUMNS.index("memorized")]
    )
    assert f"train row {inspected_run[1]}" in pairs and pairs.count("<img") == 2
    _, none, _, _, no_pairs = dataset_view(inspection, "s21", "reward", True, False, "reward", "2", None, False, False)
    assert none == [] and "No flagged sample" in no_pairs  # rewards are tanh-squashed: none reaches 2
    with pytest.raises(ValueError, match="min of the score filter"):
        dataset_view(inspection, "s21", "reward", True, False, "reward", "high", "", False, False)


def test_cli_serves_locally_without_share_link_or_analytics(inspected_run, datasets_cache, monkeypatch, capsys):
    """``rlsyn-trl inspect RUN`` binds 127.0.0.1, makes no share link and turns Gradio's analytics off."""
    from rlsyn_trl import cli
    from rlsyn_trl.inspection import app

    served = {}

    class Recorder:
        rlsyn_theme = None

        def launch(self, **options):
            served.update(options)

    monkeypatch.setattr(app, "build_app", lambda inspection, generator, steps: Recorder())
    assert cli.main(["inspect", str(inspected_run[0]), "--cache-dir", datasets_cache]) == 0
    assert served["server_name"] == "127.0.0.1" and served["server_port"] == 7860
    assert served["share"] is False and served["inbrowser"] is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert "http://127.0.0.1:7860" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["inspect", "--help"])
    assert "PATH_OR_HUB_ID" in capsys.readouterr().out


def test_adapter_tab_samples_an_identity_and_seed(inspected_run, datasets_cache):
    """``--adapter``: the app gets a sampling tab; the same identity and seed give the same images."""
    from rlsyn_trl.generators import IdentityGenerator
    from rlsyn_trl.inspection.app import _sampler

    generator = IdentityGenerator.from_pretrained(inspected_run[0].parent / "models" / "adapter")
    demo = build_app(load_inspection(inspected_run[0], cache_dir=datasets_cache), generator, steps=2)
    assert "Sample from the adapter" in str(demo.config)
    sample = _sampler(generator, steps=2, guidance_scale=1.5)
    first, again = sample("s22", 3, 2), sample("s22", 3.0, 2)
    assert len(first) == 2 and first[0][1] == "s22, seed 3, #0"
    assert [image.tobytes() for image, _ in first] == [image.tobytes() for image, _ in again]
    assert first[0][0].size == (16, 16)


def test_a_port_in_use_is_refused_before_loading_with_a_free_one(inspected_run, datasets_cache, capsys):
    from rlsyn_trl import cli

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((DEFAULT_HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["inspect", str(inspected_run[0]), "--cache-dir", datasets_cache, "--port", str(port)]
        assert cli.main(args) == 1
    error = capsys.readouterr().err
    assert f"Port {port} on 127.0.0.1 is in use" in error and "pass --port " in error and "Traceback" not in error
