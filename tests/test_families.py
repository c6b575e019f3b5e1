"""Every tracer on tiny random models of transformers families that have no registered ArchSpec.

Each family in ``unpact.testing.DETECT_FAMILIES`` is built offline from a 2-layer, 64-wide config and
loaded with ``load_model`` (its architecture map found by ``unpact._arch_detect``); then integrated
gradients, leave-one-out, the logit lens, the attacks (``attn_bias`` where the model takes a 4-D
mask), the left-padded prompt pass and, where the checks allow, edge attribution patching run on it
and are compared with the model's own logits. A family that transformers cannot build here is
skipped with the reason.

``UNPACT_FAMILY_TABLE=path pytest tests/test_families.py`` appends one markdown row per passing
family to ``path`` (the table in docs/models.md is made that way).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from unpact._arch import sliding_window
from unpact.attacks import run_attack
from unpact.attribution import integrated_gradients, leave_one_out
from unpact.circuits import edge_attribution_patching, faithfulness_curve
from unpact.data import Example
from unpact.errors import ArchitectureError, UnsupportedFeatureError
from unpact.forward import prompt_pass
from unpact.hooks import count_hooks
from unpact.lens import logit_lens
from unpact.models import ModelState, Subject, load_model
from unpact.testing import DETECT_FAMILIES, tiny_model

pytestmark = pytest.mark.slow

ITEMS = [
    Example("ada", "Where was Ada Lovelace born?", "London", subject="Ada Lovelace", keywords=("Ada", "born")),
    Example("capital", "What is the capital of France?", "Paris", keywords=("capital", "France")),
    Example("who", "Who wrote the book?", "the author", keywords=("wrote",)),
]
CORRUPT = "Where was The Lovelace born?"  # same token count as ITEMS[0].prompt in the tiny tokenizer
ATOL = 1e-4


def _build(family: str) -> tuple[torch.nn.Module, object]:
    try:
        return tiny_model(family)
    except Exception as exc:  # a family this transformers version cannot build offline: skipped, with why
        pytest.skip(f"transformers cannot build a tiny {family}: {type(exc).__name__}: {exc}")


def _answer_logprobs(s: Subject, ex: Example) -> torch.Tensor:
    """``(n_answer,)`` log-probabilities of the gold answer from one plain, unpadded forward of the model."""
    enc = s.encode(ex)
    with torch.no_grad():
        logits = s.model(input_ids=enc.input_ids[None], use_cache=False).logits[0].float()
    a0, a1 = enc.answer_span
    return torch.log_softmax(logits[a0 - 1 : a1 - 1], -1).gather(1, enc.input_ids[a0:a1, None])[:, 0]


def _attn_bias_refusal(s: Subject) -> str | None:
    """What the ``attn_bias`` attack should refuse on this model (``None``: it runs)."""
    if not s.spec.accepts_4d_mask:
        return "accepts_4d_mask"
    window = sliding_window(s.config)
    width = max(len(s.encode(e).input_ids) for e in ITEMS)
    return "sliding window" if window is not None and width > window else None


def _check_attribution(s: Subject) -> bool:
    refs = [float(_answer_logprobs(s, ex).mean()) for ex in ITEMS[:2]]
    ig = s.spec.disabled_reason("ig") is None
    for method in (integrated_gradients, leave_one_out) if ig else (leave_one_out,):
        kw = {"n_steps": 8} if method is integrated_gradients else {}
        for ref, a in zip(refs, method(s, ITEMS[:2], **kw)):
            assert np.isfinite(a.token_scores).all() and len(a.token_scores) == len(a.tokens)
            # F(x) through unpact's forward path (stopped at the final norm, decoded by Subject.decode_resid) is
            # the model's own number; IG's completeness is not checked here (top-k MoE routing is not smooth)
            assert a.value == pytest.approx(ref, abs=ATOL), method.__name__
    return ig


def _check_lens(s: Subject) -> bool:
    if not (s.spec.lens_ok and s.spec.decode_ok):
        with pytest.raises(ArchitectureError, match="logit lens is off"):
            logit_lens(s, ITEMS[:1])
        return False
    for ex, tr in zip(ITEMS[:2], logit_lens(s, ITEMS[:2], top_k=3, keep_distributions=True)):
        ids = s.encode(ex).input_ids
        with torch.no_grad():
            ref = torch.log_softmax(s.model(input_ids=ids[None], use_cache=False).logits[0].float(), -1)[:-1]
        np.testing.assert_allclose(tr.logprobs[-1], ref.numpy(), atol=ATOL)  # the last row is the model's output
        assert tr.logprob.shape == (s.n_layers + 1, len(ids) - 1) and np.isfinite(tr.logprob).all()
    return True


def _check_prompt_pass(s: Subject) -> None:
    """Left-padded rows (position ids from the mask) give each row's unpadded numbers."""
    encs = [s.encode(e) for e in ITEMS]
    assert len({len(e.prompt_ids) for e in encs}) > 1  # the batch really pads
    both = prompt_pass(s, [e.prompt_ids for e in encs], [e.answer_ids for e in encs])
    for i, (ex, e) in enumerate(zip(ITEMS, encs)):
        one = prompt_pass(s, [e.prompt_ids], [e.answer_ids])
        torch.testing.assert_close(both.answer_logprobs[i], one.answer_logprobs[0], atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(both.answer_logprobs[i], _answer_logprobs(s, ex), atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(both.first_logits[i], one.first_logits[0], atol=ATOL, rtol=ATOL)


def _check_attacks(s: Subject) -> bool:
    refs = [float(_answer_logprobs(s, ex).mean()) for ex in ITEMS]
    plain = run_attack(s, ITEMS, "plain", max_new_tokens=3)
    assert [o.answer_logprob for o in plain] == pytest.approx(refs, abs=ATOL)
    for attack in ("restate", "embed_scale"):
        outs = run_attack(s, ITEMS, attack, max_new_tokens=3)
        assert len(outs) == len(ITEMS) and all(np.isfinite(o.answer_logprob) for o in outs)
    refusal = _attn_bias_refusal(s)
    if refusal is not None:
        with pytest.raises(ArchitectureError, match=refusal):
            run_attack(s, ITEMS, "attn_bias", max_new_tokens=3)
        return False
    outs = run_attack(s, ITEMS, "attn_bias", max_new_tokens=3)
    assert all(np.isfinite(o.answer_logprob) for o in outs) and all(o.n_key_positions > 0 for o in outs)
    return True


def _check_circuits(s: Subject) -> bool:
    if not s.spec.additive_writes:
        with pytest.raises(UnsupportedFeatureError):
            edge_attribution_patching(s, ITEMS[0], corrupt=CORRUPT)
        return False
    eap = edge_attribution_patching(s, ITEMS[0], corrupt=CORRUPT)
    # the writes add up: patching every edge gives the clean run, patching none the corrupt run
    full, empty = faithfulness_curve(s, [eap.top_k(eap.n_edges), eap.top_k(0)])
    assert full.metric_circuit == pytest.approx(eap.metric_clean, abs=ATOL)
    assert empty.metric_circuit == pytest.approx(eap.metric_corrupt, abs=ATOL)
    return True


def _table_row(family: str, s: Subject, ig: bool, lens: bool, bias: bool, circuits: bool, seconds: float) -> str:
    """``| family | class | IG | LOO | lens | attn_bias | circuits | logits | why off; parallel | seconds |``."""
    checks, off = s.spec.extra.get("checks", {}), s.spec.extra.get("disabled", {})
    logits = checks.get("logits", "").replace("unembed(final_norm(h))", "").strip() or "as is"
    cells = ["yes" if on else "no" for on in (ig, True, lens, bias, circuits)]
    why = [f"{k}: {v}" for k, v in off.items()] + [f"parallel residual: {checks.get('parallel', '?')}"]
    return (
        f"| {family} | {type(s.model).__name__} | {' | '.join(cells)} | {logits} | {'; '.join(why)} | {seconds:.1f} |"
    )


@pytest.mark.parametrize("family", DETECT_FAMILIES)
def test_every_tracer_on_a_detected_family(family: str) -> None:
    t0 = time.perf_counter()
    model, tok = _build(family)
    state = ModelState.capture(model, with_weights=True)
    s = load_model(model, tok, name=f"tiny-{family}")
    assert s.detected and s.spec.model_type == model.config.model_type
    assert count_hooks(model) == 0 and ModelState.capture(model, with_weights=True) == state

    ig = _check_attribution(s)
    lens = _check_lens(s)
    _check_prompt_pass(s)
    bias = _check_attacks(s)
    circuits = _check_circuits(s)

    assert count_hooks(model) == 0, "a tracer left a hook behind"
    assert ModelState.capture(model, with_weights=True) == state
    table = os.environ.get("UNPACT_FAMILY_TABLE")
    if table:
        with open(table, "a", encoding="utf-8") as fh:
            fh.write(_table_row(family, s, ig, lens, bias, circuits, time.perf_counter() - t0) + "\n")


def test_at_least_twenty_families_build_and_load() -> None:
    loaded = []
    for family in DETECT_FAMILIES:
        try:
            model, tok = tiny_model(family)
        except Exception:  # counted as not built; the parametrized test says why
            continue
        loaded.append(load_model(model, tok).detected)
    assert sum(loaded) >= 20, f"only {sum(loaded)} of {len(DETECT_FAMILIES)} families load"
