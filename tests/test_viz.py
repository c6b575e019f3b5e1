"""viz: figures from result objects (fake and real), escaping, and the no-import rule."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest
from _viz_fixtures import EVIL, fake_attribution, fake_lens
from matplotlib.figure import Figure

from viz._common import VizInputError, wrap_grid

WORDS = ["What", " is", " the", " colour", " of", " Alice", " Smith", "?"]


def _pair():
    rng = np.random.default_rng(0)
    b = fake_attribution(WORDS, rng.normal(size=len(WORDS)), keywords=("Alice Smith",))
    u = fake_attribution(WORDS, rng.normal(size=len(WORDS)), keywords=("Alice Smith",))
    return b, u


def test_heatmap_panels_and_difference():
    from viz.attribution import token_heatmap, token_heatmap_plotly

    b, u = _pair()
    fig = token_heatmap_plotly(b, u, wrap=5)
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 3
    diff_grid, _ = wrap_grid(WORDS, u.word_scores - b.word_scores, 5)
    np.testing.assert_allclose(np.asarray(heat[2].z, float), diff_grid, equal_nan=True)
    assert heat[0].zmid == 0 and heat[0].zmin == -heat[0].zmax  # diverging scale centred at zero
    # key words "Alice", "Smith" framed in each of the 3 panels
    assert len(fig.layout.shapes) == 2 * 3
    mfig = token_heatmap(b, u, wrap=5)
    assert isinstance(mfig, Figure) and len(mfig.axes) == 6  # 3 panels + 3 colour bars
    single = token_heatmap_plotly(b)
    assert len([t for t in single.data if isinstance(t, go.Heatmap)]) == 1


def test_heatmap_share_values_and_errors():
    from viz.attribution import token_heatmap_plotly

    b, u = _pair()
    fig = token_heatmap_plotly(b, u, values="share", wrap=100)
    z = np.asarray(fig.data[0].z, float)
    assert np.isclose(np.nansum(np.abs(z)), 1.0)
    short = fake_attribution(WORDS[:3], np.ones(3))
    with pytest.raises(VizInputError, match="same prompt"):
        token_heatmap_plotly(b, short)
    with pytest.raises(VizInputError, match="level"):
        token_heatmap_plotly(b, level="sentence")


def test_plotly_text_is_escaped():
    from viz.attribution import token_heatmap_plotly

    a = fake_attribution(["Who", " " + EVIL], np.array([1.0, -1.0]))
    js = token_heatmap_plotly(a).to_json()
    assert "<script>" not in js and "&lt;script&gt;" in js


def test_real_attribution_and_diff(tiny):
    from unpact.attribution import leave_one_out
    from unpact.data import Example
    from unpact.testing import tiny_subject
    from viz.attribution import token_heatmap, token_heatmap_plotly

    ex = [Example("a", "Where was Ada Lovelace born?", "London", keywords=("Ada Lovelace",))]
    (base,) = leave_one_out(tiny, ex)
    (other,) = leave_one_out(tiny_subject("gpt2", seed=1), ex)
    fig = token_heatmap_plotly(base, other, level="token")
    assert len([t for t in fig.data if isinstance(t, go.Heatmap)]) == 3
    assert len(fig.layout.shapes) >= 3  # key tokens found through token_to_word
    dfig = token_heatmap(base.diff(other))
    assert isinstance(dfig, Figure) and len(dfig.axes) == 6


def test_attribution_matrix():
    from viz.attribution import attribution_matrix, attribution_matrix_plotly

    m = np.arange(2 * len(WORDS), dtype=float).reshape(2, -1) - 5
    a = fake_attribution(WORDS, np.ones(len(WORDS)), matrix=m)
    fig = attribution_matrix_plotly(a)
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), m)
    assert fig.data[0].zmid == 0
    assert isinstance(attribution_matrix(a), Figure)
    with pytest.raises(VizInputError, match="per_answer_token"):
        attribution_matrix_plotly(fake_attribution(WORDS, np.ones(len(WORDS))))


def test_lens_grid_and_curves():
    from viz.lens import lens_curves, lens_curves_plotly, lens_grid, lens_grid_plotly

    b, u = fake_lens(3, 6, 0), fake_lens(3, 6, 1)
    g = lens_grid_plotly(b, value="rank")
    np.testing.assert_allclose(np.asarray(g.data[0].z), np.log10(b.ranks + 1.0))
    p = lens_grid_plotly(b, value="prob")
    np.testing.assert_allclose(np.asarray(p.data[0].z), b.probs)
    c = lens_curves_plotly(b, u)
    assert len(c.data) == 2
    np.testing.assert_allclose(c.data[1].y, u.probs[:, -1])
    c2 = lens_curves_plotly(b, u, position=2, value="rank")
    np.testing.assert_allclose(c2.data[0].y, b.ranks[:, 2] + 1.0)
    assert isinstance(lens_grid(b), Figure) and isinstance(lens_curves(b, u, value="rank"), Figure)
    with pytest.raises(VizInputError):
        lens_grid_plotly(b, value="logit")
    with pytest.raises(VizInputError, match="out of range"):
        lens_curves_plotly(b, position=99)


def test_circuit_graph_categories():
    from viz.circuits import circuit_graph, circuit_graph_plotly, edge_map, node_layout

    a = {("embed", "a0"): -2.0, ("a0.h1", "m0"): 1.0, ("m0", "logits"): -0.5, ("m1", "logits"): 0.01}
    b = {("embed", "a0"): -1.5, ("m0", "logits"): 0.2, ("a1.h0", "logits"): 3.0, ("m1", "logits"): 0.02}
    assert list(edge_map(a, 2)) == [("embed", "a0"), ("a0.h1", "m0")]
    fig = circuit_graph_plotly(a, b, k=3)
    names = {t.name for t in fig.data if t.mode == "lines"}
    assert names == {"kept (both)", "lost (base only)", "gained (unlearned only)"}
    lost = [t for t in fig.data if t.mode == "lines" and t.name.startswith("lost")]
    assert len(lost) == 1 and lost[0].line.dash == "dash"
    pos = node_layout(["embed", "a0.h1", "m0", "a1", "logits"])
    assert pos["embed"][0] < pos["a0.h1"][0] < pos["m0"][0] < pos["a1"][0] < pos["logits"][0]
    assert isinstance(circuit_graph(a, b, k=3), Figure)

    class Diff:  # CircuitDiff-like rows (from, to, score_a, score_b)
        lost = [("embed", "a0", -2.0, -0.1)]
        gained = [("a1.h0", "logits", 0.0, 3.0)]
        reweighted = [("m0", "logits", -0.5, 0.2)]

    fig = circuit_graph_plotly(Diff())
    assert {t.name for t in fig.data if t.mode == "lines"} == {
        "kept (both)",
        "lost (base only)",
        "gained (unlearned only)",
    }


def test_recovery_chart_reads_scoring_summary():
    from _viz_fixtures import model_summary

    from viz.recovery import dilemma_plot, dilemma_plot_plotly, recovery_chart, recovery_chart_plotly, recovery_rows

    s = model_summary((2, 10), (17, 20), {"restate": (5, 8, 1), "quote": (1, 8, 0)}, None)
    rows = recovery_rows(s)
    assert [r["attack"] for r in rows] == ["restate", "quote"]
    assert rows[0]["rate"] == 5 / 8 and rows[0]["control"] == 1 / 8 and rows[0]["n"] == 8
    lo, hi = rows[0]["ci"]
    assert lo < 5 / 8 < hi
    fig = recovery_chart_plotly(s)
    assert [t.name for t in fig.data] == ["unlearned model", "control (never saw the facts)"]
    np.testing.assert_allclose(fig.data[0].error_y.arrayminus[0], 5 / 8 - lo)
    assert isinstance(recovery_chart(s), Figure)
    pts = [
        {"method": "npo", "retain_accuracy": 0.8, "forget_accuracy": 0.1},
        {"method": "ga", "retain_accuracy": 0.2, "forget_accuracy": 0.0, "forget_accuracy_ci": (0.0, 0.2)},
    ]
    d = dilemma_plot_plotly(pts)
    assert list(d.data[0].x) == [0.8, 0.2]
    assert isinstance(dilemma_plot(pts), Figure)
    with pytest.raises(VizInputError, match="numeric"):
        dilemma_plot_plotly([{"method": "x"}])
    with pytest.raises(VizInputError):
        recovery_rows({"nothing": 1})


def test_html_helpers_escape():
    from unpact._html import result_html, table_html, tokens_html

    h = tokens_html(["a", EVIL], [1.0, -2.0], key=[1], title=EVIL)
    assert "<script>" not in h and "&lt;script&gt;" in h and "border-bottom" in h
    t = table_html([{"x": EVIL, "y": 0.123456}])
    assert "<script>" not in t and "0.1235" in t
    assert "<script>" not in result_html(EVIL, {EVIL: EVIL}, h)
    with pytest.raises(ValueError, match="one score per token"):
        tokens_html(["a"], [1.0, 2.0])


def test_unpact_never_imports_viz():
    code = (
        "import sys, unpact, unpact.attribution, unpact.audit, unpact.cli, unpact._html; "
        "unpact.cli.build_parser(); print('viz' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_real_lens_trajectory(tiny):
    from unpact import lens
    from unpact.data import Example
    from viz.lens import lens_curves_plotly, lens_grid

    ex = [Example("a", "Where was Ada Lovelace born?", "London")]
    (t,) = lens.logit_lens(tiny, ex)
    fig = lens_curves_plotly(t, t, value="rank")
    np.testing.assert_allclose(fig.data[0].y, t.rank[:, t.answer_span[0] - 1] + 1.0)  # first answer token by default
    assert isinstance(lens_grid(t, value="prob"), Figure)


def test_probe_layers_figure_draws_every_model_with_its_interval_and_chosen_layer():
    from viz.representations import probe_layers_plotly

    rows = {
        "base": {
            "layers": ["embed", "0", "1"],
            "accuracy": [0.1, 0.5, 0.8],
            "lo": [0.0, 0.4, 0.7],
            "hi": [0.2, 0.6, 0.9],
            "shuffled": [0.1, 0.1, 0.1],
            "layer": 2,
        },
        "<b>unl</b>": {"layers": ["embed", "0", "1"], "accuracy": [0.1, 0.3, 0.2], "layer": 1},
    }
    fig = probe_layers_plotly(rows, chance=0.05)
    names = [t.name for t in fig.data]
    assert "base" in names and "<b>unl</b>" in names and "base: shuffled labels" in names
    main = next(t for t in fig.data if t.name == "base")
    assert list(main.error_y.array) == pytest.approx([0.1, 0.1, 0.1])
    assert list(main.error_y.arrayminus) == pytest.approx([0.1, 0.1, 0.1])
    chosen = next(t for t in fig.data if t.name == "base: chosen layer")
    assert list(chosen.x) == ["1"] and list(chosen.y) == [0.8]
    unl = next(t for t in fig.data if t.name == "<b>unl</b>")
    assert unl.error_y.array is None  # no interval given, none drawn
