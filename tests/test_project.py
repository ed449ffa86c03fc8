"""Project facts written once: the version lives in pyproject.toml and the package reads it."""

from pathlib import Path

import pytest

import pdfgc_core

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def test_version_is_read_from_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pdfgc_core.__version__ == project["version"]
    assert "version" not in project.get("dynamic", [])


def test_changelog_has_an_unreleased_section_and_the_current_version():
    text = (REPO / "CHANGELOG.md").read_text()
    assert "## Unreleased" in text or f"## {pdfgc_core.__version__}" in text
