"""The user guide stays a guide: short, about the product, pointing at the method and the measurements."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCESS_WORDS = re.compile(r"\b(session \d|issue #?\d+|lent GPU|prototype run)", re.IGNORECASE)


def test_readme_is_a_short_user_guide_about_the_product():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12_000, "README.md is a user guide: move tables and logs to docs/"
    assert not PROCESS_WORDS.findall(readme)
    for linked in ("docs/method.md", "docs/results.md"):
        assert linked in readme and (ROOT / linked).is_file()


def test_docs_speak_of_the_product_only():
    for page in (ROOT / "docs").glob("*.md"):
        assert not PROCESS_WORDS.findall(page.read_text()), page
