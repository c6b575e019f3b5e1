"""Result objects render themselves in Jupyter, with every user string escaped."""

from __future__ import annotations

from unpact.attribution import attribute
from unpact.circuits import edge_attribution_patching
from unpact.data import Example
from unpact.lens import logit_lens
from unpact.testing import tiny_subject

EVIL = "<script>alert(1)</script>"


def test_repr_html_escapes_user_strings() -> None:
    s, s2 = tiny_subject("gpt2"), tiny_subject("gpt2", seed=1)
    ex = Example(f"id{EVIL}", f"Where was {EVIL} Ada born?", f"London {EVIL}", subject="Ada")
    a, b = attribute(s, ex, n_steps=4), attribute(s2, ex, n_steps=4)
    objs = [a, a.diff(b), logit_lens(s, [ex])[0], edge_attribution_patching(s, ex, corrupt="mean")]
    for obj in objs:
        html = obj._repr_html_()
        assert "<script>" not in html, type(obj).__name__
        assert "&lt;script&gt;" in html or "script" not in html
        assert html.startswith("<div")
