"""mkdocs hooks of the docs site (``hooks:`` in mkdocs.yml).

The docstrings cross-reference with Sphinx roles (``:func:`name```); mkdocstrings renders them as the role's text
followed by the code span. This hook keeps the code span only (``~pkg.mod.name`` shows as ``name``, as in Sphinx).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj|const):<code>(~?)([^<]+)</code>")


def _name(m: re.Match[str]) -> str:
    target = m.group(2)
    return f"<code>{target.rsplit('.', 1)[-1] if m.group(1) else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Sphinx roles in rendered docstrings become plain code spans."""
    return _ROLE.sub(_name, html)
