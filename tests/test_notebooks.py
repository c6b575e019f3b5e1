"""The notebooks: in sync with notebooks/_build.py, committed without outputs, and executed on the micro toy world."""

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


@pytest.mark.parametrize("name", NAMES)
def test_notebook_in_sync_and_clean(name, tmp_path):
    committed = nbformat.read(NB_DIR / name, as_version=4)
    (fresh,) = [p for p in _build.build(tmp_path) if p.name == name]
    assert _sources(committed) == _sources(nbformat.read(fresh, as_version=4)), "run python notebooks/_build.py"
    assert all(
        not c.get("outputs") and c.get("execution_count") is None for c in committed.cells if c.cell_type == "code"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, micro_world, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("UNPACT_CACHE", str(Path(micro_world.root).parent))
    monkeypatch.setenv("UNPACT_MODEL_DIR", str(micro_world.base_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NB_DIR / name, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
