"""The HTML report as an optional plugin of the command line.

The report lives in the plotting package ``viz``, which the computing package never imports. The CLI loads it by
name, only when a command needs it, so ``unpact`` works (and its tests run) without ``viz`` or its plotting
dependencies; both shipped CLI paths that write a report (``unpact report`` and the end of ``unpact audit``) go
through here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REPORT_MODULE = "viz.report"


def report_module() -> ModuleType:
    """Import and return :mod:`viz.report`.

    Raises:
        ImportError: If the ``viz`` package is not installed, with how to get it.
    """
    try:
        return importlib.import_module(REPORT_MODULE)
    except ImportError as exc:
        raise ImportError(
            f"the HTML report needs the '{REPORT_MODULE}' module of the unpact distribution ({exc}); "
            "reinstall unpact with its plotting dependencies (pip install -e .)"
        ) from exc
