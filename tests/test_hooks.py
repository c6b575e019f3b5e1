"""The hook context manager: reading, replacing, cleanup and state preservation."""

from __future__ import annotations

import pytest
import torch

from unpact.hooks import ActivationCache, count_hooks, hooked, run_with_cache, site_names
from unpact.models import ModelState, frozen
from unpact.testing import TINY_ARCHITECTURES, tiny_subject

IDS = torch.tensor([[5, 17, 33, 2, 41, 8]])


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_every_site_reads_with_expected_shapes(arch: str) -> None:
    s = tiny_subject(arch)
    sites = ["embed", "final"] + [
        f"{k}.{l}" for k in ("resid_pre", "resid_post", "attn_out", "mlp_out", "head_out") for l in range(s.n_layers)
    ]
    _, cache = run_with_cache(s, IDS, sites)
    assert set(cache) == set(sites)
    for name, act in cache.items():
        expect = (1, 6, s.n_heads, s.d_head) if name.startswith("head_out") else (1, 6, s.d_model)
        assert tuple(act.shape) == expect, name
    # Residual bookkeeping: the stream leaving block 0 is the stream entering block 1.
    assert torch.allclose(cache["resid_post.0"], cache["resid_pre.1"])
    assert cache.stack("resid_post").shape == (s.n_layers, 1, 6, s.d_model)


def test_replacement_changes_output_and_zeroing_all_heads_equals_zero_attention() -> None:
    s = tiny_subject("llama")
    with torch.no_grad():
        clean = s.model(IDS).logits
        with hooked(s, {"head_out.0": lambda t, hook: torch.zeros_like(t)}, cache=["attn_out.0"]) as cache:
            edited = s.model(IDS).logits
    assert not torch.allclose(clean, edited)
    # Llama's o_proj has no bias, so zero heads means zero attention output.
    assert cache["attn_out.0"].abs().max() == 0


def test_hooks_chain_in_order_and_see_hook_info() -> None:
    s = tiny_subject("gpt2")
    seen = []

    def add_one(t, *, hook):
        seen.append((hook.name, hook.kind, hook.layer))
        return t + 1

    def times_two(t, *, hook):
        return t * 2

    with (
        torch.no_grad(),
        hooked(s, [("resid_post.-1", add_one), ("resid_post.1", times_two)], cache=["resid_post.1"]) as c1,
    ):
        s.model(IDS)
    with torch.no_grad(), hooked(s, cache=["resid_post.1"]) as c0:
        s.model(IDS)
    assert seen == [("resid_post.1", "resid_post", 1)]
    assert torch.allclose(c1["resid_post.1"], (c0["resid_post.1"] + 1) * 2)


def test_body_raising_leaves_no_hooks_and_state_unchanged() -> None:
    s = tiny_subject("qwen2")
    s.model.train()
    list(s.model.parameters())[3].requires_grad_(False)
    before = ModelState.capture(s.model, with_weights=True)
    n0 = count_hooks(s.model)
    with pytest.raises(RuntimeError, match="boom"):
        with frozen(s.model), hooked(s, {"mlp_out.1": lambda t, hook: t * 0}, cache=site_names(s, "resid_pre")):
            assert count_hooks(s.model) > n0
            s.model(IDS)
            raise RuntimeError("boom")
    assert count_hooks(s.model) == n0
    assert ModelState.capture(s.model, with_weights=True) == before


def test_bad_site_names_fail_before_attaching() -> None:
    s = tiny_subject("gpt2")
    n0 = count_hooks(s.model)
    for bad, msg in [
        ("resid", "unknown hook site"),
        ("resid_post", "needs a layer"),
        ("resid_post.9", "out of range"),
        ("final.0", "takes no layer"),
    ]:
        with pytest.raises(ValueError, match=msg):
            with hooked(s, cache=["embed", bad]):
                pass
    assert count_hooks(s.model) == n0


def test_wrong_shape_replacement_is_a_clear_error() -> None:
    s = tiny_subject("gpt2")
    with pytest.raises(ValueError, match="returned shape"):
        with torch.no_grad(), hooked(s, {"embed": lambda t, hook: t[:, :1]}):
            s.model(IDS)
    assert count_hooks(s.model) == 0


def test_gradients_flow_through_cached_activations() -> None:
    s = tiny_subject("mistral")
    with frozen(s.model), hooked(s, cache=["resid_pre.1"], detach=False) as cache:
        emb = s.embed(IDS).detach().requires_grad_(True)
        out = s.model(inputs_embeds=emb).logits[0, -1, 0]
        grad = torch.autograd.grad(out, [emb, cache["resid_pre.1"]])
    assert all(g.abs().sum() > 0 for g in grad)
    assert all(p.grad is None for p in s.model.parameters())
    assert isinstance(cache, ActivationCache)
