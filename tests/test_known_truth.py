"""The known-truth suite: models whose truth is known by construction get the right verdict (unpact.known_truth).

Every change to the verdict runs this. The world is the micro preset with 60 people (6 forget subjects, enough
fact clusters for the clustered intervals to decide; 1500 training steps), built once per session and cached with
UNPACT_TEST_CACHE.
"""

from __future__ import annotations

import os

import pytest

from unpact.audit import AuditConfig, Models, audit
from unpact.known_truth import known_truth_models
from unpact.models import ModelState
from unpact.verdict import VerdictRule

#: The suite's world: the micro preset with more people (see the module docstring).
SUITE_WORLD = {"n_people": 60, "steps": 1500}

#: The suite world's forget set has about 40 facts (clusters): too few for the clustered intervals to exclude
#: the default 15-point margin, so the suite checks the verdict's logic at a 30-point margin (the default world
#: is audited with the default rule in docs/audit.md).
SUITE_RULE = {"min_excess": 0.3}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from unpact.toyworld import build_toyworld

    cache = os.environ.get("UNPACT_TEST_CACHE") or str(tmp_path_factory.mktemp("suite-cache"))
    world = build_toyworld("micro", cache_dir=cache, progress=False, overrides=SUITE_WORLD)
    base, ro = world.load_base(), world.load_retain_only()
    before = ModelState.capture(base.model, with_weights=True), ModelState.capture(ro.model, with_weights=True)
    forget = world.forget
    models = known_truth_models(base, ro, forget, world.retain)
    assert (
        ModelState.capture(base.model, with_weights=True),
        ModelState.capture(ro.model, with_weights=True),
    ) == before
    out = tmp_path_factory.mktemp("suite-audit")
    config = AuditConfig(
        out=str(out),
        attacks=("restate", "front", "sample", "embed_scale"),
        attribution="loo",
        max_retain=96,
        n_retain_attacked=8,
        lens=False,
        circuits=0,
        # the verdict's evidence only: the exploratory stages are tested on their own, and 16 relearning steps
        # reach what 32 do on this world (every verdict the same; measured), at half the time
        directions=False,
        soft_prompt=False,
        diff_attacks=False,
        relearn_steps=16,
        progress=False,
        rule=VerdictRule(**SUITE_RULE),
    )
    summary = audit(config, Models(base, {m.name: m.subject for m in models}, retain_only=ro), forget, world.retain)
    return models, summary


@pytest.mark.slow
def test_known_truth_verdicts(suite) -> None:
    models, summary = suite
    got = {m.name: summary.models[m.name].verdict.label for m in models}
    want = {m.name: m.truth for m in models}
    rows = "\n".join(
        f"{n:10s} truth={want[n]:15s} verdict={got[n]:20s} {summary.models[n].verdict.reason}" for n in got
    )
    print("\nknown-truth suite:\n" + rows)
    # every model gets its truth: the masked one through the probe (white box: its states are the base's),
    # the graded ones because their fine-tuning keeps the whole retain set (no destruction)
    wrong = {n for n in got if got[n] != want[n]}
    assert not wrong, rows
    masked = summary.models["masked"]
    assert masked.verdict.levels["white_box"] == "recoverable", rows
    assert masked.verdict.levels["weights"] != "recoverable"  # the mask stays in every fine-tuned copy


@pytest.mark.slow
def test_relearning_summary_of_the_control_against_itself_is_zero(suite) -> None:
    # "never" is the retain-only model: fine-tuned identically, its curves equal the control's on every train set
    _, summary = suite
    rows = summary.models["never"].sections["relearn"]
    assert set(rows) == {"forget_a", "retain", "unrelated", "forget_b"}
    for r in rows.values():
        assert r["model_accuracy"] == r["control_accuracy"] and r["area_between"] == 0.0
        assert r["first_step_reaching_half"]["model"] == r["first_step_reaching_half"]["control"]
