"""Tests of unpact.representations.tuned_lens (tuned lens) and logit_lens(method="tuned")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from unpact._io import load_bundle, save_bundle
from unpact.data import Example
from unpact.errors import InputError, MissingFileError
from unpact.hooks import count_hooks, run_with_cache
from unpact.lens import LensTrajectory, lens_diff, logit_lens
from unpact.models import ModelState
from unpact.representations.tuned_lens import TunedLens, fit_tuned_lens, layer_kl, load_text_corpus
from unpact.testing import tiny_subject

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank today.",
    "Where was Ada Lovelace born? She was born in London in the year 1815.",
    "The capital of France is Paris, and the capital of Spain is Madrid too.",
    "Answer with one word: the city, the year, the job, or the name itself.",
]
EXAMPLES = [
    Example("capital", "What is the capital of France?", "The capital of France is Paris."),
    Example("ada", "Where was Ada Lovelace born?", "London"),
]


@pytest.fixture(scope="module")
def toy_lens(toy_base, micro_world) -> TunedLens:
    """The micro world base model's tuned lens, trained on the retain items only (default settings)."""
    return fit_tuned_lens(toy_base, micro_world.retain, forget=micro_world.forget)


# ----- the micro world -----------------------------------------------------------------------------


def test_tuned_lens_beats_logit_lens_on_micro_world(toy_base, micro_world, toy_lens) -> None:
    before = ModelState.capture(toy_base.model, with_weights=True)
    hooks = count_hooks(toy_base.model)
    assert toy_lens.layer_names == ["embed"] + [str(i) for i in range(toy_base.n_layers)]
    assert toy_lens.n_sequences == len(micro_world.retain)
    np.testing.assert_array_equal(toy_lens.weight[-1], np.eye(toy_base.d_model, dtype=np.float32))
    assert not toy_lens.bias[-1].any()
    # held-out people (the forget items were never trained on) and retain items alike
    for items in (micro_world.forget, micro_world.retain[:96]):
        logit, tuned = layer_kl(toy_base, items), layer_kl(toy_base, items, toy_lens)
        assert logit.shape == tuned.shape == (toy_base.n_layers + 1,)
        assert (tuned[:-1] < logit[:-1]).all(), (logit, tuned)
        assert logit[-1] == 0 and tuned[-1] == 0
    assert (toy_lens.train_kl[:-1] < toy_lens.start_kl[:-1]).all()
    assert ModelState.capture(toy_base.model, with_weights=True) == before
    assert count_hooks(toy_base.model) == hooks


def test_tuned_trajectory_on_micro_world(toy_base, micro_world, toy_lens) -> None:
    exs = micro_world.forget[:3]
    logit = logit_lens(toy_base, exs, keep_distributions=True)
    tuned = logit_lens(toy_base, exs, keep_distributions=True, method="tuned", tuned=toy_lens)
    for a, b in zip(logit, tuned):
        assert a.method == "logit" and b.method == "tuned"
        assert b.provenance is not None and b.provenance.method == "tuned_lens"
        # the last layer needs no translator: it decodes exactly as the logit lens
        np.testing.assert_array_equal(b.logprobs[-1], a.logprobs[-1])
        np.testing.assert_array_equal(b.logprob[-1], a.logprob[-1])
        assert not np.allclose(b.logprobs[0], a.logprobs[0])
        # each trajectory's own KL to the final row: lower through the tuned lens on average
        assert (b.kl_to_final[:-1].mean(-1) < a.kl_to_final[:-1].mean(-1)).all()


# ----- the algorithm ------------------------------------------------------------------------------


def _reference_fit(model, ids: torch.Tensor, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tuned-lens package's (0.2.0) training step, transcribed for GPT-2 without its data and logging code.

    ``tuned_lens/scripts/train_loop.py`` (``Train.execute``, KL loss, token shift 0, one batch per step,
    no autocast) with ``tuned_lens/nn/lenses.py``'s ``TunedLens`` (a zero-initialised ``Linear`` per layer
    but the last, ``h + translator(h)``, decoded by ``lm_head(ln_f(.))``) and the default optimizer of
    ``tuned_lens/scripts/ingredients.py`` (SGD, lr ``1.0 * (1 - 0.9)``, Nesterov momentum 0.9, weight decay
    1e-3, linear decay to 0, no warmup) and the gradient clipped to norm 1.
    """
    d, n = model.config.n_embd, model.config.n_layer
    translators = torch.nn.ModuleList([torch.nn.Linear(d, d) for _ in range(n)])
    for t in translators:
        t.weight.data.zero_()
        t.bias.data.zero_()
    opt = torch.optim.SGD(translators.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (steps - s) / steps))
    losses = []
    for _ in range(steps):
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
        labels = out.logits.float().log_softmax(-1)
        row = []
        for i, h in enumerate(out.hidden_states[:-1]):
            logits = model.lm_head(model.transformer.ln_f(h + translators[i](h)))
            loss = torch.sum(labels.exp() * (labels - logits.log_softmax(-1)), dim=-1).mean()
            loss.backward()
            row.append(loss.item())
        torch.nn.utils.clip_grad_norm_(translators.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        sched.step()
        losses.append(row)
    a = torch.stack([t.weight.detach() for t in translators]).numpy()
    b = torch.stack([t.bias.detach() for t in translators]).numpy()
    return a, b, np.array(losses)


def test_matches_reference_training_step() -> None:
    s = tiny_subject("gpt2")
    toks = [s.tokenizer(t)["input_ids"][:12] for t in TEXTS]
    texts = [s.tokenizer.decode(t) for t in toks]  # exactly 12 tokens each: one unpadded chunk per text
    assert [s.tokenizer(t)["input_ids"] for t in texts] == toks
    steps = 20
    ours = fit_tuned_lens(s, texts, steps=steps, batch_size=len(texts), max_length=12)
    s.model.eval()
    a, b, losses = _reference_fit(s.model, torch.tensor(toks), steps)
    np.testing.assert_allclose(ours.weight[:-1] - np.eye(s.d_model, dtype=np.float32), a, atol=2e-6)
    np.testing.assert_allclose(ours.bias[:-1], b, atol=2e-6)
    assert np.abs(a).max() > 0.05  # the translators did move
    np.testing.assert_allclose(ours.start_kl[:-1], losses[0], rtol=1e-5)
    np.testing.assert_allclose(ours.train_kl[:-1], losses[-2:].mean(0), rtol=1e-5)


def test_hand_set_translators_decode_as_computed_directly(tiny) -> None:
    """Translators set by hand: the lens decodes ``lm_head(ln_f(h + A h + b))``, computed here without unpact."""
    rng = np.random.default_rng(0)
    lens = TunedLens.identity(tiny)
    d, rows = tiny.d_model, tiny.n_layers + 1
    a = (rng.standard_normal((rows - 1, d, d)) * 0.2).astype(np.float32)
    b = rng.standard_normal((rows - 1, d)).astype(np.float32)
    lens.weight[:-1] += a
    lens.bias[:-1] = b
    tr = logit_lens(tiny, EXAMPLES[:1], keep_distributions=True, method="tuned", tuned=lens)[0]
    ids = torch.as_tensor(tr.token_ids)[None]
    with torch.no_grad():
        out = tiny.model(input_ids=ids, output_hidden_states=True)
        model_lp = torch.log_softmax(out.logits[0, :-1], -1).numpy()
        _, cache = run_with_cache(tiny, ids, ["resid_pre.0", "resid_post.0", "resid_post.1"])
        for row, site in enumerate(["resid_pre.0", "resid_post.0"]):
            h = cache[site][0, :-1]
            by_hand = h + h @ torch.from_numpy(a[row]).T + torch.from_numpy(b[row])
            np.testing.assert_allclose(lens.translate(row, h).numpy(), by_hand.numpy(), rtol=1e-5, atol=1e-5)
            ref = torch.log_softmax(tiny.model.lm_head(tiny.model.transformer.ln_f(by_hand)), -1).numpy()
            np.testing.assert_allclose(tr.logprobs[row], ref, atol=1e-5)
    np.testing.assert_allclose(tr.logprobs[-1], model_lp, atol=1e-5)  # the last row: the model's own output
    # A = -I, b = c: every position of that layer decodes to the same distribution, lm_head(ln_f(c))
    c = rng.standard_normal(d).astype(np.float32)
    lens.weight[0], lens.bias[0] = 0.0, c
    tr = logit_lens(tiny, EXAMPLES[:1], keep_distributions=True, method="tuned", tuned=lens)[0]
    with torch.no_grad():
        const = torch.log_softmax(tiny.model.lm_head(tiny.model.transformer.ln_f(torch.from_numpy(c))), -1)
    np.testing.assert_allclose(tr.logprobs[0], np.broadcast_to(const.numpy(), tr.logprobs[0].shape), atol=1e-5)
    # layer_kl with this lens is the mean over positions of KL(final || layer), here by hand for row 0
    with torch.no_grad():
        full = torch.log_softmax(tiny.model(input_ids=torch.as_tensor(tr.token_ids)[None]).logits[0], -1)
    want = (full.exp() * (full - const)).sum(-1).mean().item()
    assert layer_kl(tiny, [EXAMPLES[0]], lens)[0] == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_architectures(arch: str, tmp_path) -> None:
    s = tiny_subject(arch)
    s.model.train()
    before = ModelState.capture(s.model, with_weights=True)
    hooks = count_hooks(s.model)
    lens = fit_tuned_lens(s, TEXTS + EXAMPLES, steps=30, batch_size=3)
    assert lens.weight.shape == (s.n_layers + 1, s.d_model, s.d_model) and lens.weight.dtype == np.float32
    assert lens.bias.shape == (s.n_layers + 1, s.d_model)
    assert lens.n_sequences == len(TEXTS) + len(EXAMPLES) and lens.steps == 30
    assert lens.provenance is not None and lens.provenance.weights_hash == s.weights_hash()
    logit, tuned = layer_kl(s, TEXTS + EXAMPLES), layer_kl(s, TEXTS + EXAMPLES, lens)
    assert (tuned[:-1] < logit[:-1]).all() and logit[-1] == tuned[-1] == 0
    lens.save(tmp_path / "lens.npz")
    loaded = TunedLens.load(tmp_path / "lens.npz")
    assert loaded == lens
    a = logit_lens(s, EXAMPLES, method="tuned", tuned=lens, keep_distributions=True)
    b = logit_lens(s, EXAMPLES, method="tuned", tuned=loaded, keep_distributions=True)
    plain = logit_lens(s, EXAMPLES, keep_distributions=True)
    for x, y, z in zip(a, b, plain):
        np.testing.assert_array_equal(x.logprobs, y.logprobs)
        np.testing.assert_array_equal(x.logprobs[-1], z.logprobs[-1])
    assert ModelState.capture(s.model, with_weights=True) == before
    assert count_hooks(s.model) == hooks
    assert all(p.grad is None for p in s.model.parameters())


# ----- saving, loading, refusing ---------------------------------------------------------------------


def test_save_load_round_trip(tiny, tmp_path) -> None:
    lens = fit_tuned_lens(tiny, TEXTS, steps=5, batch_size=2)
    lens.save(tmp_path / "sub" / "tuned.npz")
    loaded = TunedLens.load(tmp_path / "sub" / "tuned.npz")
    assert loaded == lens
    assert loaded.provenance == lens.provenance and loaded.layer_names == lens.layer_names
    loaded.check_subject(tiny)
    other = dataclasses.replace(lens, bias=lens.bias + 1)
    assert other != lens


def test_refuses_a_lens_of_another_model(tiny) -> None:
    lens = fit_tuned_lens(tiny, TEXTS, steps=3, batch_size=2)
    other = tiny_subject("gpt2", seed=1)
    mine, theirs = tiny.weights_hash()[:16], other.weights_hash()[:16]
    for call in (
        lambda: logit_lens(other, EXAMPLES, method="tuned", tuned=lens),
        lambda: layer_kl(other, TEXTS, lens),
    ):
        with pytest.raises(InputError, match="trained on model") as err:
            call()
        assert mine in str(err.value) and theirs in str(err.value) and "fit_tuned_lens" in str(err.value)
    fewer = dataclasses.replace(lens, weight=lens.weight[:-1], bias=lens.bias[:-1], layer_names=lens.layer_names[:-1])
    with pytest.raises(InputError, match="n_layers \\+ 1 rows"):
        logit_lens(tiny, EXAMPLES, method="tuned", tuned=fewer)
    with pytest.raises(InputError, match="no provenance"):
        logit_lens(tiny, EXAMPLES, method="tuned", tuned=dataclasses.replace(lens, provenance=None))
    with pytest.raises(InputError, match='method="tuned" needs'):
        logit_lens(tiny, EXAMPLES, method="tuned")
    with pytest.raises(InputError, match='with method="logit"'):
        logit_lens(tiny, EXAMPLES, tuned=lens)
    with pytest.raises(InputError, match="unknown lens method"):
        logit_lens(tiny, EXAMPLES, method="tunde")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="must be a TunedLens"):
        logit_lens(tiny, EXAMPLES, method="tuned", tuned="lens.npz")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="out of range"):
        lens.translate(5, torch.zeros(3, tiny.d_model))


def test_corpus_checks(tiny, tmp_path) -> None:
    forget = [Example("f1", "Where was Zorblat born?", "Quexville")]
    with pytest.raises(InputError, match="is a forget item"):
        fit_tuned_lens(tiny, EXAMPLES + forget, steps=1, forget=forget)
    with pytest.raises(InputError, match="question and answer of forget item 'f1'"):
        fit_tuned_lens(tiny, ["Where was Zorblat born? In Quexville."], steps=1, forget=forget)
    with pytest.raises(InputError, match="single str"):
        fit_tuned_lens(tiny, "some text", steps=1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="corpus is empty"):
        fit_tuned_lens(tiny, [], steps=1)
    with pytest.raises(InputError, match=r"corpus\[1\] is int"):
        fit_tuned_lens(tiny, ["text", 3], steps=1)  # type: ignore[list-item]
    with pytest.raises(InputError, match="steps must be >= 1"):
        fit_tuned_lens(tiny, TEXTS, steps=0)
    path = tmp_path / "corpus.txt"
    path.write_text("First paragraph,\nstill the first.\n\n\nSecond one.\n", encoding="utf-8")
    assert load_text_corpus(path) == ["First paragraph,\nstill the first.", "Second one."]
    lens = fit_tuned_lens(tiny, load_text_corpus(path), steps=2, max_length=4)
    n_tokens = sum(len(tiny.tokenizer(t)["input_ids"]) for t in load_text_corpus(path))
    assert lens.n_tokens == n_tokens and lens.n_sequences == sum(
        -(-len(tiny.tokenizer(t)["input_ids"]) // 4) for t in load_text_corpus(path)
    )
    with pytest.raises(MissingFileError):
        load_text_corpus(tmp_path / "nope.txt")


# ----- trajectories and diffs ------------------------------------------------------------------------


def test_diff_needs_the_same_method(tmp_path) -> None:
    a, b = tiny_subject("gpt2", seed=0), tiny_subject("gpt2", seed=1)
    la, lb = (fit_tuned_lens(s, TEXTS, steps=5, batch_size=2) for s in (a, b))
    ta = logit_lens(a, EXAMPLES[:1], method="tuned", tuned=la, keep_distributions=True)[0]
    tb = logit_lens(b, EXAMPLES[:1], method="tuned", tuned=lb, keep_distributions=True)[0]
    d = lens_diff(ta, tb)
    assert d.method == "tuned" and d.kl is not None and (d.kl >= -1e-6).all()
    np.testing.assert_allclose(d.rank_change, tb.rank - ta.rank)
    plain = logit_lens(b, EXAMPLES[:1], keep_distributions=True)[0]
    assert lens_diff(logit_lens(a, EXAMPLES[:1])[0], plain).method == "logit"
    with pytest.raises(InputError, match="cannot diff a tuned-lens trajectory with a logit-lens one"):
        ta.diff(plain)
    ta.save(tmp_path / "t.npz")
    assert LensTrajectory.load(tmp_path / "t.npz") == ta
    assert ta.to_dict()["method"] == "tuned" and "Tuned lens" in ta._repr_html_()


def test_trajectory_saved_before_the_method_field_loads(tiny, tmp_path) -> None:
    tr = logit_lens(tiny, EXAMPLES[:1])[0]
    tr.save(tmp_path / "new.npz")
    meta, arrays = load_bundle(tmp_path / "new.npz", kind="LensTrajectory")
    assert meta.pop("method") == "logit"
    meta.pop("kind")
    save_bundle(tmp_path / "old.npz", meta, arrays, kind="LensTrajectory")  # as written before this field
    old = LensTrajectory.load(tmp_path / "old.npz")
    assert old.method == "logit" and old == tr


def test_half_precision_model() -> None:
    from unpact.models import load_model
    from unpact.testing import tiny_model

    model, tok = tiny_model("llama")
    s = load_model(model, tok, dtype=torch.bfloat16, name="tiny-llama-bf16")
    lens = fit_tuned_lens(s, TEXTS, steps=30, batch_size=2)
    assert lens.weight.dtype == np.float32 and np.isfinite(lens.weight).all()
    logit, tuned = layer_kl(s, TEXTS), layer_kl(s, TEXTS, lens)
    assert (tuned[:-1] < logit[:-1]).all()
    tr = logit_lens(s, EXAMPLES[:1], method="tuned", tuned=lens)[0]
    assert tr.method == "tuned" and np.isfinite(tr.logprob).all()


def test_docs_example_runs(micro_world, monkeypatch, tmp_path, capsys) -> None:
    """docs/lens.md's tuned-lens example runs as written and prints what it says."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "lens.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    (block,) = [b for b in blocks if "fit_tuned_lens(base" in b]
    monkeypatch.setenv("UNPACT_CACHE", str(Path(micro_world.root).parent))
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(doc), "exec"), {})
    assert (tmp_path / "base_tuned_lens.npz").exists()
    logit_line, tuned_line, traj_line = capsys.readouterr().out.splitlines()
    logit, tuned = (np.array(line.strip("[]").split(), dtype=float) for line in (logit_line, tuned_line))
    np.testing.assert_allclose(logit, [10.6, 0.85, 0.0], rtol=0.1, atol=0.01)  # the numbers in the comments
    np.testing.assert_allclose(tuned, [1.6, 0.23, 0.0], rtol=0.1, atol=0.01)
    assert traj_line.startswith("tuned [")


def test_cli_lens_fits_saves_and_reuses_a_tuned_lens(tmp_path, capsys) -> None:
    from unpact.cli import main
    from unpact.testing import tiny_model

    model, tok = tiny_model("gpt2")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Ada was born in London.\n\nBob works as a baker.\n\nCyd writes books.\n", encoding="utf-8")
    args = ["lens", "--model", str(tmp_path / "m"), "--prompt", "Where was Dee born?", "--answer", "Paris"]
    lens_path = tmp_path / "lens.npz"
    assert main([*args, "--fit-tuned-lens", str(corpus), "--save-tuned-lens", str(lens_path), "--json"]) == 0
    fitted = capsys.readouterr().out
    assert lens_path.exists() and '"method": "tuned"' in fitted
    assert main([*args, "--tuned-lens", str(lens_path)]) == 0
    assert "(tuned lens)" in capsys.readouterr().out
    assert main(args) == 0
    assert "(logit lens)" in capsys.readouterr().out
    assert main([*args, "--tuned-lens", str(lens_path), "--fit-tuned-lens", str(corpus)]) == 2
    assert "both given" in capsys.readouterr().err
