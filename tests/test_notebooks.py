"""The tutorial notebooks: in sync with notebooks/_build.py, committed without outputs, shaped as tutorials.

Each opens with a markdown cell and ends with a "What to try next" cell. The docs build (``make docs``, run by CI)
executes them on the micro world and fails on an error or a notebook that draws no figure (``image/png`` output).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
sys.path.insert(0, str(NB_DIR))
import _build  # noqa: E402

NAMES = sorted(_build.NOTEBOOKS)


def _sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def test_notebook_set_is_the_generated_one():
    """No notebook in the folder that the generator does not make (a renamed tutorial leaves no stale copy)."""
    assert sorted(p.name for p in NB_DIR.glob("*.ipynb")) == NAMES
    assert _build.stale() == []


@pytest.mark.parametrize("name", NAMES)
def test_notebook_in_sync_and_clean(name, tmp_path):
    committed = nbformat.read(NB_DIR / name, as_version=4)
    (fresh,) = [p for p in _build.build(tmp_path) if p.name == name]
    assert _sources(committed) == _sources(nbformat.read(fresh, as_version=4)), "run python notebooks/_build.py"
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in committed.cells if c.cell_type == "code"
    )


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_a_tutorial(name):
    """Opens with a markdown cell saying what it shows, ends with what to try next."""
    cells = nbformat.read(NB_DIR / name, as_version=4).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert cells[-1].cell_type == "markdown" and "What to try next" in cells[-1].source
