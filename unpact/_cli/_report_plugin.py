"""The HTML report as an optional plugin of the command line.

The report lives in the plotting package ``viz``, which the computing package never imports. The CLI loads it by
name, only when a command needs it, so ``unpact`` works (and its tests run) without ``viz`` or its plotting
dependencies; every shipped CLI path that writes a report or a plot (``unpact report``, the end of ``unpact audit``,
the plots of ``unpact sweep``) goes through here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

REPORT_MODULE = "viz.report"
SWEEP_PLOTS_MODULE = "viz.sweep"


def _plugin(name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the '{name}' module of the unpact distribution ({exc}); "
            "reinstall unpact with its plotting dependencies (pip install -e .)"
        ) from exc


def report_module() -> ModuleType:
    """Import and return :mod:`viz.report`.

    Raises:
        ImportError: If the ``viz`` package is not installed, with how to get it.
    """
    return _plugin(REPORT_MODULE, "the HTML report")


def sweep_plots_module() -> ModuleType:
    """Import and return :mod:`viz.sweep` (the sweep's trade-off and recovery plots).

    Raises:
        ImportError: If the ``viz`` package is not installed, with how to get it.
    """
    return _plugin(SWEEP_PLOTS_MODULE, "the sweep's plots")
