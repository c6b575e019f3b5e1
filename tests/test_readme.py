"""The README's Python examples run as written (on the micro toy world of this test session)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(micro_world, monkeypatch, capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    # build_toyworld("micro") in the README must find the session's cached world instead of rebuilding.
    monkeypatch.setenv("UNPACT_CACHE", str(Path(micro_world.root).parent))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "key words:" in printed
    report = Path(printed.strip().splitlines()[-1])
    assert report.suffix == ".html" and report.exists()


def test_prompt_format_doc_example_runs(capsys) -> None:
    """docs/prompts.md's Python example prints what the page says it prints."""
    doc = README.parent / "docs" / "prompts.md"
    (block,) = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    exec(compile(block, str(doc), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["'Question: Where was Ada Lovelace born?\\nAnswer:'", "Where was Ada Lovelace born?"]
