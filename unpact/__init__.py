"""unpact: is an unlearned language model's knowledge gone, or only hidden?

The public surface is small; everything is imported lazily so ``import unpact`` does no work.
Data flows one way: load -> trace -> diff -> attack/score -> audit -> report.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it. A name equal to a submodule's (unlearn, evaluate, audit) is not
# exported: importing the submodule would rebind the attribute to the module. Import those from their modules.
_EXPORTS: dict[str, str] = {
    "load_model": "unpact.models",
    "Subject": "unpact.models",
    "ArchSpec": "unpact._arch",
    "register_architecture": "unpact._arch",
    "detect_architecture": "unpact._arch_detect",
    "hooked": "unpact.hooks",
    "run_with_cache": "unpact.hooks",
    "Example": "unpact.data",
    "load_examples": "unpact.data",
    "encode": "unpact.data",
    "PromptFormat": "unpact.prompts",
    "build_toyworld": "unpact.toyworld",
    "attribute": "unpact.attribution",
    "integrated_gradients": "unpact.attribution",
    "leave_one_out": "unpact.attribution",
    "logit_lens": "unpact.lens",
    "edge_attribution_patching": "unpact.circuits",
    "key_words": "unpact.keytokens",
    "run_attack": "unpact.attacks",
}

__all__ = sorted([*_EXPORTS, "__version__"])


# Submodules reachable as attributes after a plain ``import unpact`` (``unpact.circuits.edge_attribution_patching``),
# imported on first access.
_SUBMODULES = (
    "adapters",
    "attacks",
    "attribution",
    "audit",
    "circuits",
    "data",
    "errors",
    "evaluate",
    "forward",
    "hooks",
    "keytokens",
    "lens",
    "metrics",
    "models",
    "modelstate",
    "prompts",
    "quality",
    "scoring",
    "testing",
    "toyworld",
    "unlearn",
    "verdict",
    "weights",
    "words",
    "stats",
    "evidence",
    "known_truth",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"unpact.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unpact' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBMODULES])


if TYPE_CHECKING:  # pragma: no cover
    from unpact._arch import ArchSpec, register_architecture
    from unpact._arch_detect import detect_architecture
    from unpact.attacks import run_attack
    from unpact.attribution import attribute, integrated_gradients, leave_one_out
    from unpact.circuits import edge_attribution_patching
    from unpact.data import Example, encode, load_examples
    from unpact.hooks import hooked, run_with_cache
    from unpact.keytokens import key_words
    from unpact.lens import logit_lens
    from unpact.models import Subject, load_model
    from unpact.prompts import PromptFormat
    from unpact.toyworld import build_toyworld
