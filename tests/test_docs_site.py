"""The docs site's generated parts (docs/_site): tables in sync with their JSON, API and CLI references complete,
the nav complete, links rewritten, offline check. The full strict build runs in ``make docs`` (CI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_site"))
import hooks  # noqa: E402
import make_site  # noqa: E402
import pages  # noqa: E402
import tables  # noqa: E402


def test_generated_tables_match_their_json():
    assert tables.stale_pages(ROOT / "docs") == [], "run: python docs/_site/build.py --write-tables"


def test_a_hand_edited_table_is_caught(tmp_path):
    page = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    assert "<!-- generated: demo_table: begin -->" in page
    edited = page.replace("unierase         12.9", "unierase         13.9", 1)
    assert edited != page
    (tmp_path / "audit.md").write_text(edited, encoding="utf-8")
    assert tables.stale_pages(tmp_path) == ["audit.md"]


def test_unknown_generated_block_names_the_page():
    with pytest.raises(KeyError, match="page.md.*'nope'"):
        tables.fill("<!-- generated: nope: begin -->\n<!-- generated: nope: end -->", "page.md")


@pytest.mark.parametrize("package", ["unpact", "viz"])
def test_api_reference_covers_every_public_name(package):
    import importlib

    text = pages.api_page(package, "intro")
    names = pages.public_names(package)
    assert names and set(names) <= set(importlib.import_module(package).__all__)
    for name in names:
        path = pages._where(package, name)
        assert f"::: {path}\n" in text
        module, _, attr = path.rpartition(".")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        assert obj is getattr(importlib.import_module(package), name)


def test_cli_reference_has_every_subcommand():
    from unpact.cli import SUBCOMMANDS

    text = pages.cli_page()
    for name in SUBCOMMANDS:
        assert f"## `unpact {name}`" in text
    assert "usage: unpact audit" in text


def test_index_page_links_point_into_the_site():
    text = pages.index_page()
    assert "](docs/" not in text
    assert "[audit.md](audit.md)" in text and "(img/recovery_npo_gd.png)" in text


def test_nav_lists_every_page_and_tutorial():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    config_text = yaml.safe_dump(config["nav"])
    for page in (ROOT / "docs").glob("*.md"):
        assert page.name in config_text, page.name
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"tutorials/{nb.name}" in config_text, nb.name
    assert config["theme"]["font"] is False and config["strict"] is True


def test_sphinx_roles_become_code_spans():
    html = ":meth:<code>~unpact.models.Subject.decode</code> and :mod:<code>unpact.lens</code>"
    assert hooks.on_page_content(html) == "<code>decode</code> and <code>unpact.lens</code>"


def test_offline_check_flags_remote_resources(tmp_path):
    (tmp_path / "ok.html").write_text('<script src="assets/x.js"></script><a href="https://x.org">x</a>')
    make_site.check_offline(tmp_path)
    (tmp_path / "bad.html").write_text('<link rel="stylesheet" href="https://fonts.googleapis.com/css">')
    with pytest.raises(make_site.DocsBuildError, match="bad.html"):
        make_site.check_offline(tmp_path)


def test_demo_figures_draw(tmp_path):
    import figures

    made = figures.demo_figures(tmp_path)
    names = {p.name for p in made}
    assert {"dilemma.png", "tradeoff.png", "probes.png", "recovery_npo_gd.png"} <= names
    assert all(p.stat().st_size > 5000 for p in made)
