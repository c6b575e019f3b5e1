"""A model of a family that is not registered goes through the command-line audit with no code change."""

from __future__ import annotations

import json
import os

import pytest

from unpact._arch import supported_architectures

FAMILY = "olmo"  # not registered: its architecture map is detected from the module


@pytest.fixture(scope="module")
def olmo_world(tmp_path_factory):
    """The micro world with OLMo models (built once per module, cached with UNPACT_TEST_CACHE)."""
    from unpact.toyworld import build_toyworld

    cache = os.environ.get("UNPACT_TEST_CACHE") or str(tmp_path_factory.mktemp("olmo-cache"))
    return build_toyworld("micro", cache_dir=cache, progress=False, overrides={"arch": FAMILY})


@pytest.mark.slow
def test_unregistered_family_is_audited_through_the_cli(olmo_world, tmp_path) -> None:
    from unpact.audit import AuditSummary
    from unpact.cli import main

    assert FAMILY not in supported_architectures()
    base = olmo_world.load_base()
    assert base.spec.model_type == FAMILY and base.spec.detected
    w = olmo_world
    out = tmp_path / "audit"
    args = [
        "audit",
        "--base",
        str(w.base_path),
        "--unlearned",
        f"never={w.retain_only_path}",
        "--retain-only",
        str(w.retain_only_path),
        "--forget",
        str(w.root / "data" / "forget10.json"),
        "--retain",
        str(w.root / "data" / "retain90.json"),
        "--out",
        str(out),
        "--max-retain",
        "24",
        "--n-retain-attacked",
        "4",
        "--circuits",
        "1",
        "--relearn-steps",
        "4",
        "--soft-prompt-steps",
        "5",
        "--diff-attack-items",
        "4",
        "--no-progress",
        "--workers",
        "1",
    ]
    assert main(args) == 0
    s = AuditSummary.from_dict(json.loads((out / "summary.json").read_text()))
    assert s.prompt_format["base_accuracy"]["passed"]
    assert s.models["base"].scores.forget_acc.rate >= 0.5
    # the model that never saw the facts, audited as if unlearned: nothing recoverable at any level (on the micro
    # world's twelve forget facts the clustered intervals may not exclude the margin: removal or inconclusive)
    v = s.models["never"].verdict
    assert v is not None and v.label in ("removal", "inconclusive"), v
    assert "recoverable" not in v.levels.values()
    assert (out / "report.html").exists()
