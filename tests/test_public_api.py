"""Public names resolve to functions/classes even after every submodule was imported first (no shadowing)."""

from __future__ import annotations

import subprocess
import sys

_CHECK = """
import importlib, pkgutil, types
import unpact
for info in pkgutil.walk_packages(unpact.__path__, "unpact."):
    importlib.import_module(info.name)
bad = [n for n in unpact.__all__ if isinstance(getattr(unpact, n), types.ModuleType)]
print("modules:", bad)
raise SystemExit(1 if bad else 0)
"""


def test_public_names_are_not_shadowed_by_submodules() -> None:
    proc = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_detect_architecture_is_exported() -> None:
    import unpact
    from unpact._arch_detect import detect_architecture

    assert "detect_architecture" in unpact.__all__ and unpact.detect_architecture is detect_architecture
