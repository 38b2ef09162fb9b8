"""What an installed wheel needs: the recipes, their YAMLs and the card templates inside the package, no links."""

import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rlsyn_trl"


def test_package_holds_no_symbolic_links():
    assert [path for path in PACKAGE.rglob("*") if path.is_symlink()] == []


def test_recipes_yamls_and_templates_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["rlsyn_trl"]
    wanted = [
        *PACKAGE.glob("recipes/*/*.yaml"),
        *PACKAGE.glob("recipes/*.py"),
        *PACKAGE.glob("templates/*.md"),
    ]
    assert len(wanted) > 20
    for path in wanted:
        relative = path.relative_to(PACKAGE).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
