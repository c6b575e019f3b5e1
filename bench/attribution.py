"""Benchmark: unpact's integrated gradients vs captum's LLMGradientAttribution(LayerIntegratedGradients).

Both attribute the same examples (answers of 8+ tokens) with the same baseline (pad token at the
prompt positions), quadrature (Gauss-Legendre) and ``n_steps``. captum's ``LLMGradientAttribution``
runs one IG per answer token and sums them; unpact runs one IG of the summed answer log-probability
(``target="sum"``), which is the same quantity by linearity, with all examples x alphas batched.

Each (library, model) run happens in its own subprocess so that the peak resident memory
(``ru_maxrss``) of one does not hide the other's; the RSS after loading the model is reported too.
The achieved FLOP rate uses an analytic count (see ``_flops``) against a plain float32 matmul
timed in the same process.

Usage:
    .venv/bin/python bench/attribution.py                    # toy model (if cached) + GPT-2-small-sized
    .venv/bin/python bench/attribution.py --models gpt2-small --n-steps 16 --n-examples 2
    UNPACT_CACHE=/path/to/cache .venv/bin/python bench/attribution.py --models toy

The toy model is the micro toy world's base model; it is only used when it is already in the
cache (building it takes minutes); otherwise the bench says so and skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    ("What is the capital of France?", "The capital of France is Paris, a city on the river."),
    ("Where was Ada Lovelace born?", "She was born in London in 1815, near the river."),
    ("Who wrote the book?", "The author wrote it in a small town near the river."),
    ("What is the quick brown fox doing?", "The quick brown fox jumps over the lazy dog."),
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _matmul_gflops(n: int = 1024, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def _load(model: str, toy_cache: str | None) -> tuple[Any, list[Any]]:
    """Subject and examples (answers of 8+ tokens) for one model."""
    import torch

    from unpact.data import Example, encode
    from unpact.models import load_model

    if model == "gpt2-small":
        from transformers import GPT2Config, GPT2LMHeadModel

        from unpact.testing import tiny_tokenizer

        torch.manual_seed(0)
        cfg = GPT2Config()  # 12 layers, 768 wide, 50257 vocab: 124M parameters
        cfg._attn_implementation = "eager"
        hf = GPT2LMHeadModel(cfg).eval()
        subject = load_model(hf, tiny_tokenizer(), name="gpt2-small-random")
        examples = [Example(f"e{i}", p, a) for i, (p, a) in enumerate(PROMPTS)]
    else:
        from unpact.toyworld import build_toyworld

        world = build_toyworld("micro", cache_dir=toy_cache, progress=False)
        subject = world.load_base()
        # Toy answers are short names: attribute the model's own 10-token greedy continuation.
        examples = []
        for ex in world.forget[:8]:
            ids = encode(subject.tokenizer, ex).prompt_ids[None]
            with torch.no_grad():
                out = subject.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=10,
                    min_new_tokens=10,
                    do_sample=False,
                    pad_token_id=subject.tokenizer.pad_token_id,
                )
            text = subject.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            examples.append(Example(ex.id, ex.prompt, text.strip() or ex.answer))
    lengths = [len(encode(subject.tokenizer, e).answer_ids) for e in examples]
    return subject, [e for e, n in zip(examples, lengths) if n >= 8]


def _flops(subject: Any, seq: int, n_rows: int, head_positions: int) -> float:
    """Analytic FLOPs of ``n_rows`` forward+input-backward passes (backward ~ forward: no weight grads).

    Per row: blocks ``2 * N_block * seq`` + attention scores/values ``4 * n_layers * seq^2 * d``
    + unembedding ``2 * d * vocab * head_positions``; doubled for the backward to the inputs.
    """
    n_block = sum(p.numel() for b in subject.blocks for p in b.parameters())
    d = subject.d_model
    fwd = 2 * n_block * seq + 4 * subject.n_layers * seq**2 * d + 2 * d * subject.vocab_size * head_positions
    return 2.0 * fwd * n_rows


def _worker(lib: str, model: str, n_steps: int, n_examples: int, toy_cache: str | None) -> dict[str, Any]:
    import numpy as np
    import torch

    from unpact.attribution import integrated_gradients
    from unpact.data import encode
    from unpact.models import frozen

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    subject, examples = _load(model, toy_cache)
    examples = examples[:n_examples]
    if not examples:
        raise SystemExit(f"no example with an 8+ token answer for {model}")
    tok = subject.tokenizer
    encs = [encode(tok, e) for e in examples]
    rss_loaded = _rss_mb()
    gflops_peak = _matmul_gflops()
    # Reference F(x) - F(x') with the sum target, shared by both libraries.
    ref = integrated_gradients(subject, examples, n_steps=2, target="sum")
    gaps = [r.value - r.baseline_value for r in ref]
    seq = max(len(e.input_ids) for e in encs)
    pad = tok.pad_token_id
    if lib == "unpact":
        t = time.perf_counter()
        res = integrated_gradients(subject, examples, n_steps=n_steps, target="sum", baseline="pad")
        elapsed = time.perf_counter() - t
        scores = [r.token_scores for r in res]
        n_ans = [len(e.answer_ids) for e in encs]
        flops = sum(_flops(subject, seq, n_steps, n) for n in n_ans) + _flops(subject, seq, 2 * len(encs), 0) / 2
    else:
        from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

        scores, flops = [], 0.0
        bos = tok.bos_token_id
        t = time.perf_counter()
        with frozen(subject.model):
            lig = LayerIntegratedGradients(subject.model, subject.embed)
            llm = LLMGradientAttribution(lig, tok)
            for ex, enc in zip(examples, encs):
                skip = [bos] if enc.prompt_span[0] == 1 else None
                inp = TextTokenInput(ex.prompt, tok, baselines=pad, skip_tokens=skip)
                out = llm.attribute(inp, target=enc.answer_ids, n_steps=n_steps, method="gausslegendre")
                scores.append(out.seq_attr.double().cpu().numpy())
                n_p = enc.answer_span[0]
                for k in range(len(enc.answer_ids)):
                    # forward logits over all positions; backward only from the last one
                    flops += _flops(subject, n_p + k, n_steps, n_p + k) * 0.5
                    flops += _flops(subject, n_p + k, n_steps, 1) * 0.5
        elapsed = time.perf_counter() - t
    errs = [float(s.sum() - g) for s, g in zip(scores, gaps)]
    return {
        "lib": lib,
        "model": model,
        "params_m": sum(p.numel() for p in subject.model.parameters()) / 1e6,
        "n_examples": len(examples),
        "answer_tokens": [len(e.answer_ids) for e in encs],
        "prompt_tokens": [e.prompt_span[1] - e.prompt_span[0] for e in encs],
        "n_steps": n_steps,
        "seconds": elapsed,
        "completeness_abs": [abs(e) for e in errs],
        "completeness_rel": [abs(e) / abs(g) for e, g in zip(errs, gaps)],
        "scores": [np.asarray(s).tolist() for s in scores],
        "rss_loaded_mb": rss_loaded,
        "rss_peak_mb": _rss_mb(),
        "gflops_achieved": flops / elapsed / 1e9,
        "gflops_matmul": gflops_peak,
        "threads": torch.get_num_threads(),
    }


def _run_worker(lib: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        lib,
        "--models",
        model,
        "--n-steps",
        str(args.n_steps[model]),
        "--n-examples",
        str(args.n_examples[model]),
    ]
    if args.toy_cache:
        cmd += ["--toy-cache", args.toy_cache]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{lib}/{model} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _toy_available(cache: str | None) -> bool:
    root = Path(cache or os.environ.get("UNPACT_CACHE") or Path.home() / ".cache" / "unpact")
    return any(root.glob("toyworld-micro-*/config.json"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="toy,gpt2-small", help="comma list of: toy, gpt2-small")
    p.add_argument("--n-steps", default="toy=50,gpt2-small=16", help="steps per model, e.g. toy=50,gpt2-small=16")
    p.add_argument("--n-examples", default="toy=8,gpt2-small=2", help="examples per model")
    p.add_argument("--toy-cache", default=None, help="toy world cache dir (default $UNPACT_CACHE or ~/.cache/unpact)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--worker", choices=["unpact", "captum"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def per_model(v: str) -> dict[str, int]:
        if "=" not in v:
            return {m: int(v) for m in ("toy", "gpt2-small")}
        return {k: int(x) for k, x in (kv.split("=") for kv in v.split(","))}

    args.n_steps, args.n_examples = per_model(args.n_steps), per_model(args.n_examples)
    if args.worker:
        model = args.models
        res = _worker(args.worker, model, args.n_steps[model], args.n_examples[model], args.toy_cache)
        print(json.dumps(res))
        return 0
    rows = []
    for model in args.models.split(","):
        if model == "toy" and not _toy_available(args.toy_cache):
            print(
                "toy: the micro toy world is not in the cache; build it once with "
                "`python -c \"from unpact.toyworld import build_toyworld; build_toyworld('micro')\"` (skipped)"
            )
            continue
        pair = {lib: _run_worker(lib, model, args) for lib in ("unpact", "captum")}
        u, c = pair["unpact"], pair["captum"]
        agree = max(
            max(abs(a - b) for a, b in zip(su, sc)) / max(1e-12, max(abs(b) for b in sc))
            for su, sc in zip(u["scores"], c["scores"])
        )
        rows.append(
            {
                "model": model,
                "unpact": u,
                "captum": c,
                "speedup": c["seconds"] / u["seconds"],
                "max_rel_diff_scores": agree,
            }
        )
        print(
            f"\n== {model}: {u['params_m']:.1f}M params, {u['n_examples']} examples, answer tokens "
            f"{u['answer_tokens']}, prompt tokens {u['prompt_tokens']}, n_steps={u['n_steps']}, "
            f"{u['threads']} threads"
        )
        print(
            f"{'':8} {'seconds':>9} {'max rel completeness err':>25} {'peak RSS MB':>12} {'RSS after load':>15}"
            f" {'GFLOP/s':>8} {'matmul GFLOP/s':>15}"
        )
        for name, r in (("unpact", u), ("captum", c)):
            print(
                f"{name:8} {r['seconds']:>9.2f} {max(r['completeness_rel']):>25.2e} {r['rss_peak_mb']:>12.0f}"
                f" {r['rss_loaded_mb']:>15.0f} {r['gflops_achieved']:>8.1f} {r['gflops_matmul']:>15.1f}"
            )
        print(
            f"speed-up (captum / unpact): {c['seconds'] / u['seconds']:.1f}x; "
            f"max relative difference of the attributions: {agree:.1e}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
