"""Build the documentation site (``make docs``): strict, offline, tutorials executed.

Usage:
    .venv/bin/python docs/_site/make_site.py [--serve] [--no-execute] [--write-tables] [--cache-dir DIR]

Steps, each printed as it starts:
1. the measured tables in ``docs/*.md`` are compared with what ``docs/results/demo`` and ``bench/results`` give
   (``--write-tables`` rewrites them instead);
2. the figures are drawn into ``docs/img`` (from the demo's JSON, and measured on the micro toy world);
3. the staging tree ``build/docs-src`` gets the pages, the getting-started page (from the README), the CLI and API
   references, and the tutorials (``notebooks/*.ipynb``) executed on the micro toy world with nbclient;
4. ``mkdocs build --strict`` writes ``build/site``: a broken link or anchor, a page left out of the nav, a failed
   docstring reference or a notebook error fails the build; so does any page that loads a script, stylesheet or
   font from the network (the site must read offline).

The micro toy world is built on first use under ``--cache-dir`` (default ``$UNPACT_CACHE``, else unpact's cache).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import figures  # noqa: E402
import pages  # noqa: E402
import tables  # noqa: E402

ROOT = HERE.parents[1]
DOCS = ROOT / "docs"
STAGING = ROOT / "build" / "docs-src"
SITE = ROOT / "build" / "site"
NOTEBOOKS = ROOT / "notebooks"
NB_TIMEOUT_S = 600
_REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//[^\"]+\"", re.I)


class DocsBuildError(RuntimeError):
    """The docs do not build: the message names the page or notebook and the fix."""


def _step(msg: str) -> None:
    print(f"[docs] {msg}", flush=True)


def check_tables(write: bool) -> None:
    """Fail when a generated table in ``docs/`` differs from its JSON (or rewrite it with ``write``)."""
    stale = tables.stale_pages(DOCS)
    if stale and write:
        for name in stale:
            path = DOCS / name
            path.write_text(tables.fill(path.read_text(encoding="utf-8"), name), encoding="utf-8")
        _step(f"rewrote the generated tables of {', '.join(stale)}")
    elif stale:
        raise DocsBuildError(
            f"the generated tables of {', '.join(stale)} differ from docs/results/demo and bench/results "
            "(edited by hand, or new results); fix: python docs/_site/make_site.py --write-tables, then review the diff"
        )


def _notebook_title(nb: object) -> tuple[str, str]:
    cells = getattr(nb, "cells", [])
    text = cells[0].source if cells and cells[0].cell_type == "markdown" else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    title = lines[0].lstrip("# ").strip() if lines else "Tutorial"
    return title, (lines[1] if len(lines) > 1 else "")


def execute_notebooks(dest: Path, cache_dir: str | None, execute: bool) -> list[tuple[str, str, str]]:
    """Each notebook executed (or copied, without ``execute``) into ``dest``; returns (file, title, blurb)."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    dest.mkdir(parents=True, exist_ok=True)
    env_backup = dict(os.environ)
    out = []
    try:
        if execute:
            from unpact.toyworld import build_toyworld

            world = build_toyworld("micro", cache_dir=cache_dir, progress=True)
            os.environ["UNPACT_CACHE"] = str(Path(world.root).parent)
            os.environ["UNPACT_MODEL_DIR"] = str(world.base_path)
            os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend: figures become PNG outputs
        for path in sorted(NOTEBOOKS.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            if execute:
                t = time.time()
                _step(f"  executing {path.name}")
                with tempfile.TemporaryDirectory(prefix="unpact-docs-nb-") as cwd:
                    # IPC sockets in the temporary directory: no TCP port, no "unencrypted kernel" warning
                    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(cwd) / "kernel-ipc"))
                    client = NotebookClient(nb, km=km, timeout=NB_TIMEOUT_S, resources={"metadata": {"path": cwd}})
                    try:
                        client.execute()
                    except CellExecutionError as exc:
                        raise DocsBuildError(
                            f"notebook {path.relative_to(ROOT)} failed: {str(exc)[-2000:]}\nfix: run it in Jupyter, "
                            "repair notebooks/_build.py, regenerate with python notebooks/_build.py"
                        ) from exc
                    finally:
                        if km.has_kernel:  # a kernel manager passed in is not shut down by the client
                            km.shutdown_kernel(now=True)
                images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
                if not images:
                    raise DocsBuildError(f"notebook {path.relative_to(ROOT)} drew no figure (no image/png output)")
                _step(f"  {path.name}: {time.time() - t:.0f} s, {images} figure(s)")
            nbformat.write(nb, dest / path.name)
            out.append((path.name, *_notebook_title(nb)))
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    return out


def stage(cache_dir: str | None, execute: bool) -> None:
    """Write the staging tree mkdocs reads."""
    if STAGING.exists():
        shutil.rmtree(STAGING)
    STAGING.mkdir(parents=True)
    for page in DOCS.glob("*.md"):
        shutil.copy2(page, STAGING / page.name)
    shutil.copytree(DOCS / "img", STAGING / "img")
    (STAGING / "index.md").write_text(pages.index_page(), encoding="utf-8")
    (STAGING / "cli.md").write_text(pages.cli_page(), encoding="utf-8")
    (STAGING / "api").mkdir()
    (STAGING / "api" / "unpact.md").write_text(
        pages.api_page("unpact", "Every name in `unpact.__all__`, documented where it is defined."), encoding="utf-8"
    )
    (STAGING / "api" / "viz.md").write_text(
        pages.api_page("viz", "Every name in `viz.__all__`: matplotlib figures, `*_plotly` figures, the report."),
        encoding="utf-8",
    )
    _step("tutorials" + (" (executed on the micro toy world)" if execute else " (not executed: --no-execute)"))
    tutorials = execute_notebooks(STAGING / "tutorials", cache_dir, execute)
    lines = [
        "# Tutorials\n",
        "Notebooks in `notebooks/`, executed on the micro toy world when this site was built; the outputs below "
        "are that run's. Run them yourself with `jupyter lab notebooks/` after `make install`.\n",
    ]
    lines += [f"- [{title}]({name}): {blurb}" for name, title, blurb in tutorials]
    (STAGING / "tutorials" / "index.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def check_offline(site: Path) -> None:
    """Fail when a built page loads anything from the network."""
    bad = []
    for page in site.rglob("*.html"):
        hit = _REMOTE.search(page.read_text(encoding="utf-8", errors="replace"))
        if hit:
            bad.append(f"{page.relative_to(site)}: {hit.group(0)[:120]}")
    if bad:
        raise DocsBuildError("pages load resources from the network (the site must read offline):\n" + "\n".join(bad))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help="serve the site on http://127.0.0.1:8000 after staging")
    ap.add_argument("--no-execute", action="store_true", help="render the notebooks without running them")
    ap.add_argument("--write-tables", action="store_true", help="rewrite the generated tables in docs/*.md")
    ap.add_argument("--cache-dir", default=os.environ.get("UNPACT_CACHE"), help="toy-world cache (micro world)")
    args = ap.parse_args(argv)
    t0 = time.time()
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    try:
        _step("checking the generated tables against docs/results and bench/results")
        check_tables(args.write_tables)
        _step("drawing the figures into docs/img (demo results; micro toy world)")
        (DOCS / "img").mkdir(exist_ok=True)
        figures.demo_figures(DOCS / "img")
        figures.micro_figures(DOCS / "img", args.cache_dir, log=_step)
        _step("staging the pages, the references and the tutorials into build/docs-src")
        stage(args.cache_dir, execute=not args.no_execute)
        mkdocs = [sys.executable, "-m", "mkdocs"]
        config = str(ROOT / "mkdocs.yml")
        if args.serve:
            _step("serving on http://127.0.0.1:8000 (Ctrl-C stops)")
            return subprocess.call([*mkdocs, "serve", "-f", config, "--no-livereload"], cwd=STAGING.parent)
        _step("mkdocs build --strict")
        # run from build/: mkdocs-jupyter keeps its cache in ./.cache
        rc = subprocess.call([*mkdocs, "build", "--strict", "-f", config], cwd=STAGING.parent)
        if rc:
            raise DocsBuildError("mkdocs build --strict failed (its warnings above name the page and the problem)")
        check_offline(SITE)
    except DocsBuildError as exc:
        print(f"[docs] error: {exc}", file=sys.stderr)
        return 1
    _step(f"site written to {SITE.relative_to(ROOT)}/index.html in {time.time() - t0:.0f} s (make docs-serve: serve)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
