"""Generated pages of the docs site: the getting-started page, the CLI reference and the API reference.

Each function returns markdown; ``make_site.py`` writes it into the staging directory. Nothing here is copied by
hand: the CLI reference comes from ``unpact.cli.build_parser()``, the API reference from ``unpact.__all__`` and
``viz.__all__`` (one mkdocstrings block per public name), the getting-started page from the README.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Links the README makes to files outside docs/: pages of the site that say the same, else plain text.
_README_LINKS = {"notebooks/": "tutorials/index.md"}


def index_page() -> str:
    """The README, its ``docs/...`` links rewritten to site pages (the README is the getting-started page)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"\[docs/([^\]]+)\]\(docs/", r"[\1](", text).replace("](docs/", "](")

    def other(m: re.Match[str]) -> str:
        target = m.group(2)
        if re.match(r"[a-z]+://|#|[\w./-]+\.md(#.*)?$", target) or (ROOT / "docs" / target).is_file():
            return m.group(0)
        for prefix, page in _README_LINKS.items():
            if target.startswith(prefix):
                return f"[{m.group(1)}]({page})"
        return f"{m.group(1)} (`{target}` in the repository)"

    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", other, text)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor; sphinx-argparse reads the same field
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_page() -> str:
    """``unpact --help`` and every subcommand's ``--help``, as the parser prints them (80 columns)."""
    from unpact.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps help at $COLUMNS
    try:
        parser = build_parser()
        parts = [
            "# Command-line reference\n",
            "Generated from the argument parser (`unpact.cli.build_parser`) when the site is built; "
            "`unpact COMMAND --help` prints the same.\n",
            "```text\n" + parser.format_help().rstrip() + "\n```\n",
        ]
        for name, sub in _subparsers(parser).items():
            parts.append(f"## `unpact {name}`\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def _where(package: str, name: str) -> str:
    """The dotted path where ``package.name`` is defined (mkdocstrings documents it there)."""
    obj = getattr(importlib.import_module(package), name)
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None)
    if module and qual and module.split(".")[0] == package:
        return f"{module}.{qual}"
    return f"{package}.{name}"


def public_names(package: str) -> list[str]:
    """``package.__all__`` without dunder names."""
    return [n for n in importlib.import_module(package).__all__ if not n.startswith("__")]


def api_page(package: str, intro: str) -> str:
    """One mkdocstrings block per public name of ``package``, grouped by the module that defines it."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in public_names(package):
        path = _where(package, name)
        groups.setdefault(path.rsplit(".", 1)[0] if "." in path else package, []).append((name, path))
    parts = [f"# API reference: `{package}`\n", intro + "\n"]
    for module, names in sorted(groups.items()):
        parts.append(f"## `{module}`\n")
        for name, path in names:
            parts.append(f"::: {path}\n    options:\n      heading_level: 3\n      show_root_full_path: false\n")
            if path.rsplit(".", 1)[-1] != name:
                parts.append(f"(exported as `{package}.{name}`)\n")
    return "\n".join(parts)
