"""The representation stages inside an audit: probes, the unlearning direction, lens recovery and the soft prompt,
on the micro world."""

from __future__ import annotations

import pytest

from unpact.audit import AuditConfig, AuditDir, Models, audit
from unpact.hooks import count_hooks
from unpact.models import ModelState


def _config(out, **kw) -> AuditConfig:
    base = dict(
        attacks=("restate", "embed_scale"),
        attribution="loo",
        max_retain=32,
        n_retain_attacked=4,
        circuits=0,
        relearn=False,
        quantize=False,
        soft_prompt_steps=10,
        diff_attack_items=4,
        progress=False,
        workers=1,
    )
    return AuditConfig(out=str(out), **{**base, **kw})


@pytest.fixture(scope="module")
def rep_audit(micro_world, toy_base, tmp_path_factory):
    from unpact.unlearn import unlearn

    rmu = unlearn(toy_base, micro_world.forget, micro_world.retain, method="rmu", progress=False)
    ro = micro_world.load_retain_only()
    models = Models(toy_base, {"rmu": rmu}, retain_only=ro)
    states = [ModelState.capture(m.model, with_weights=True) for m in (toy_base, rmu, ro)]
    out = tmp_path_factory.mktemp("rep-audit")
    s = audit(_config(out), models, micro_world.forget, micro_world.retain)
    assert [ModelState.capture(m.model, with_weights=True) for m in (toy_base, rmu, ro)] == states
    assert all(count_hooks(m.model) == 0 for m in (toy_base, rmu, ro))
    return s, out, models


@pytest.mark.slow
def test_every_representation_test_is_in_the_evidence(rep_audit) -> None:
    s, out, _ = rep_audit
    m = s.models["rmu"]
    names = {t.name for t in m.evidence}
    explore = (
        "probe",
        "probe (subject token)",
        "direction ablate",
        "direction add",
        "lens recovery",
        "soft prompt",
        "circuit-diff attack",
        "lens-diff attack",
    )
    assert {*explore, "any white-box evidence"} <= names
    for t in m.evidence:
        if t.name in explore:
            assert t.level == "white_box" and not t.primary and t.n > 0, t
    # sections for the report: probes for every model, the direction for the unlearned one
    assert set(s.models["base"].sections["probes"]) >= {"layers", "accuracy", "lo", "hi", "shuffled", "layer"}
    assert s.models["base"].sections["probes_subject"]["layers"] == s.models["base"].sections["probes"]["layers"]
    d = m.sections["directions"]
    assert len(d["share_explained"]) == len(d["layers"]) and "ablate/forget" in d["accuracy_on_forgotten"]
    assert AuditDir(out).representations_path("rmu", "direction", "last").exists()
    # the soft prompt: learned on the unlearned model and on its control, the retain-only model
    sp = m.sections["soft_prompt"]
    assert set(sp["accuracy"]) == {"none", "soft"} and sp["steps"] == 10 and 0 <= sp["best_step"] <= 10
    assert "soft_prompt" in s.models["retain_only"].sections and "soft_prompt" not in s.models["base"].sections
    # the circuit- and lens-diff attacks: chosen on half A of the unlearned model and of its control
    da = m.sections["diff_attacks"]
    assert set(da["accuracy"]) == {"none", "circuit", "lens"} and da["n_estimate"] <= 4 and da["layer"] >= 1
    assert len(da["rank_gap"]) == len(s.models["base"].sections["probes"]["layers"])
    assert "diff_attacks" in s.models["retain_only"].sections


@pytest.mark.slow
def test_a_switched_off_stage_is_done_on_resume_and_its_old_files_are_not_evidence(
    rep_audit, micro_world, tmp_path
) -> None:
    import shutil

    s, shared, models = rep_audit
    out = tmp_path / "copy"  # the other tests read the shared audit directory as the fixture left it
    shutil.copytree(shared, out)
    seen: list[str] = []
    again = audit(_config(out), models, micro_world.forget, micro_world.retain, callback=lambda st, i: seen.append(st))
    assert seen == []  # every stage was done: nothing recomputed
    assert again.verdicts() == s.verdicts()
    # the stage toggles are not part of the resume key; switched off, their saved results stop counting
    off = audit(
        _config(out, probes=False, directions=False, soft_prompt=False, diff_attacks=False),
        models,
        micro_world.forget,
        micro_world.retain,
    ).models["rmu"]
    names = {t.name for t in off.evidence}
    assert "probe" not in names and "direction ablate" not in names and "directions" not in off.sections
    assert "soft prompt" not in names and "soft_prompt" not in off.sections
    assert "lens-diff attack" not in names and "diff_attacks" not in off.sections


@pytest.mark.slow
def test_the_report_shows_every_representation_section(rep_audit) -> None:
    from viz.report import render_report

    _, out, _ = rep_audit
    html = render_report(out)
    for heading in (
        "Representations: per-layer probes",
        "Representations: the unlearning direction",
        "Embedding space: the soft-prompt attack",
        "Attacks from the circuit and lens diffs",
    ):
        assert heading in html
