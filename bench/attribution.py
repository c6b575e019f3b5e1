"""Benchmark: unpact's integrated gradients vs captum's LLMGradientAttribution(LayerIntegratedGradients).

Both attribute the same examples with the same baseline (pad token at the prompt positions),
quadrature (Gauss-Legendre) and ``n_steps``. captum's ``LLMGradientAttribution`` runs one IG per
answer token and sums them; unpact runs one IG of the summed answer log-probability
(``target="sum"``), which is the same quantity by linearity, with examples x alphas batched in chunks
sized to its memory budget.

Each (library, model) run happens in its own subprocess, after the same loading and warm-up (the
weights' hash, and F(x), F(x') in one no-grad batch each). The peak resident memory is that of the
timed run alone (``VmHWM`` reset just before it through ``/proc/self/clear_refs``; ``ru_maxrss``, the
peak since start, where that is not possible). A third subprocess runs plain inference on the same
examples in one batch (one no-grad teacher-forced forward, :func:`unpact.forward.answer_logprobs`):
each attribution's peak is reported as a ratio of that inference peak (goal for unpact: <= 1.5x).

The achieved FLOP rate uses an analytic count of the useful work
(see ``_flops``; padding is not counted) against a plain 1024 x 1024 float32 matmul timed in the same
process, before and after the attribution (the faster of the two is used, so a busy machine lowers
the ratio rather than raising it). Both are given per wall-clock second and per process CPU second:
on a shared machine the CPU-time figures (with ``BENCH_THREADS=1``) are the robust ones.

Models:
    toy         the micro toy world's base model, 8 examples, the model's own 10-token continuation
    audit       the default toy world's base model at the audit's settings: 32 forget items (one chunk),
                gold answers, n_steps=16
    gpt2-small  a random GPT-2-small-sized model (124M), 2 examples with 14-token answers

The toy worlds are only used when already in a cache (``--toy-cache``, else ``$UNPACT_CACHE`` or
``~/.cache/unpact``; building one takes minutes); otherwise the bench says so and skips them.

Usage:
    .venv/bin/python bench/attribution.py                    # toy + audit (if cached) + gpt2-small
    .venv/bin/python bench/attribution.py --models gpt2-small --n-steps 16 --n-examples 2
    .venv/bin/python bench/attribution.py --models audit --libs inference,unpact --repeat 3
    BENCH_THREADS=1 .venv/bin/python bench/attribution.py --toy-cache /path/to/cache --out /tmp/a.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
MODELS = ("toy", "audit", "gpt2-small")
LIBS = ("inference", "unpact", "captum")
WORLDS = {"toy": "micro", "audit": "default"}


def _status_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` (peak) of this process from ``/proc/self/status``, in MB (None elsewhere)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024.0 if m else None


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_mb("VmHWM") is not None


def _peak_mb(reset: bool) -> float:
    """Peak RSS since the last reset (or since the process started, ``ru_maxrss``)."""
    hwm = _status_mb("VmHWM") if reset else None
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rates(fn: Any, flops: float, reps: int) -> tuple[float, float]:
    """GFLOP/s of ``fn`` (``flops`` per call) per wall-clock second and per process CPU second."""
    fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        fn()
    return flops * reps / (time.perf_counter() - wall) / 1e9, flops * reps / (time.process_time() - cpu) / 1e9


def _matmul_gflops(n: int = 1024) -> tuple[float, float]:
    """A plain ``n x n`` float32 matmul: GFLOP/s per wall second and per CPU second."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return _rates(lambda: a @ b, 2.0 * n**3, 10)


def _load(model: str, toy_cache: str | None) -> tuple[Any, list[Any]]:
    """Subject and examples for one model."""
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

        world = build_toyworld(WORLDS[model], cache_dir=_world_cache(model, toy_cache), progress=False)
        subject = world.load_base()
        if model == "audit":
            return subject, list(world.forget[:32])
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


def _batch(subject: Any, encs: list[Any], ids_of: Any) -> tuple[Any, ...]:
    """One right-padded batch: ``(ids, mask, pos, tgt, valid)`` for :func:`answer_logprobs`."""
    from unpact.attribution._batching import answer_index, pad_rows
    from unpact.data import fill_id

    ids, mask = pad_rows([ids_of(e) for e in encs], fill_id(subject.tokenizer))
    return (ids, mask, *answer_index([e.answer_span for e in encs], ids))


def _values(subject: Any, encs: list[Any], baseline: bool) -> list[float]:
    """``F`` (summed answer log-probability) of each example, or of its pad-token baseline, in one no-grad batch."""
    import torch

    from unpact.forward import answer_logprobs
    from unpact.models import frozen

    pad = subject.tokenizer.pad_token_id

    def ids_of(e: Any) -> Any:
        ids = e.input_ids.clone()
        if baseline:
            ids[e.prompt_span[0] : e.prompt_span[1]] = pad
        return ids

    ids, mask, pos, tgt, valid = _batch(subject, encs, ids_of)
    with frozen(subject.model), torch.no_grad():
        lp = answer_logprobs(subject, ids, mask, pos, tgt)
    return (lp * valid).sum(-1).double().tolist()


def _worker(lib: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from unpact.attribution import integrated_gradients
    from unpact.attribution.ig import default_memory_budget_mb, row_bytes
    from unpact.data import encode
    from unpact.models import frozen

    n_steps, n_examples = args.n_steps[model], args.n_examples[model]
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    subject, examples = _load(model, args.toy_cache)
    examples = examples[:n_examples]
    if not examples:
        raise SystemExit(f"no example to attribute for {model}")
    tok = subject.tokenizer
    encs = [encode(tok, e) for e in examples]
    lens = [len(e.input_ids) for e in encs]
    rss_loaded = _peak_mb(False)
    mm_before = _matmul_gflops()
    budget = args.budget_mb or default_memory_budget_mb(subject)
    t_max = max(len(e.answer_ids) for e in encs)
    rows = args.internal_batch_size or max(1, int(budget * 2**20 // row_bytes(subject, max(lens), t_max)))
    subject.weights_hash()  # cached: IG's provenance would otherwise hash the weights inside the timing
    # The same warm-up in every worker: F(x) and F(x') (for the completeness error), one no-grad batch each.
    gaps = [a - b for a, b in zip(_values(subject, encs, False), _values(subject, encs, True))]
    rss_start = _status_mb("VmRSS") or rss_loaded
    reset = _reset_peak()

    def run() -> tuple[list[Any], float]:
        """One timed attribution (or inference): the scores and the analytic FLOPs of its useful work."""
        if lib == "inference":
            _values(subject, encs, False)
            return [], sum(_flops(subject, n, 1, len(e.answer_ids)) / 2 for n, e in zip(lens, encs))
        if lib == "unpact":
            res = integrated_gradients(
                subject,
                examples,
                n_steps=n_steps,
                target="sum",
                baseline="pad",
                internal_batch_size=args.internal_batch_size,
                memory_budget_mb=args.budget_mb,
            )
            # n_steps forward+backward rows per example, plus F(x) and F(x') (forward only)
            return [r.token_scores for r in res], sum(
                _flops(subject, n, n_steps + 1, len(e.answer_ids)) for n, e in zip(lens, encs)
            )
        from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

        out_scores, flops = [], 0.0
        bos, pad = tok.bos_token_id, tok.pad_token_id
        with frozen(subject.model):
            lig = LayerIntegratedGradients(subject.model, subject.embed)
            llm = LLMGradientAttribution(lig, tok)
            for ex, enc in zip(examples, encs):
                skip = [bos] if enc.prompt_span[0] == 1 else None
                inp = TextTokenInput(ex.prompt, tok, baselines=pad, skip_tokens=skip)
                out = llm.attribute(inp, target=enc.answer_ids, n_steps=n_steps, method="gausslegendre")
                out_scores.append(out.seq_attr.double().cpu().numpy())
                n_p = enc.answer_span[0]
                for k in range(len(enc.answer_ids)):
                    # forward logits over all positions; backward only from the last one
                    flops += _flops(subject, n_p + k, n_steps, n_p + k) * 0.5
                    flops += _flops(subject, n_p + k, n_steps, 1) * 0.5
        return out_scores, flops

    walls, cpus = [], []
    for _ in range(args.repeat):
        cpu, t = time.process_time(), time.perf_counter()
        scores, flops = run()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - cpu)
    elapsed, cpu = min(walls), min(cpus)
    mm_after = _matmul_gflops()
    mm = (max(mm_before[0], mm_after[0]), max(mm_before[1], mm_after[1]))
    peak = _peak_mb(reset)
    errs = [float(s.sum() - g) for s, g in zip(scores, gaps)]
    achieved = flops / elapsed / 1e9
    achieved_cpu = flops / cpu / 1e9
    return {
        "lib": lib,
        "model": model,
        "params_m": sum(p.numel() for p in subject.model.parameters()) / 1e6,
        "n_examples": len(examples),
        "answer_tokens": [len(e.answer_ids) for e in encs],
        "prompt_tokens": [e.prompt_span[1] - e.prompt_span[0] for e in encs],
        "n_steps": n_steps,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "completeness_abs": [abs(e) for e in errs],
        "completeness_rel": [abs(e) / abs(g) for e, g in zip(errs, gaps)],
        "scores": [np.asarray(s).tolist() for s in scores],
        "rss_loaded_mb": rss_loaded,
        "rss_start_mb": rss_start,
        "rss_peak_mb": peak,
        "peak_is_run_only": reset,
        "gflops_achieved": achieved,
        "gflops_matmul": mm[0],
        "efficiency": achieved / mm[0],
        "gflops_per_cpu_s": achieved_cpu,
        "gflops_matmul_per_cpu_s": mm[1],
        "efficiency_cpu": achieved_cpu / mm[1],
        "threads": torch.get_num_threads(),
        "repeats": {"seconds": walls, "cpu_seconds": cpus},
        "budget_mb": budget,
        "rows_per_forward": rows,
    }


def _run_worker(lib: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", lib, "--models", model]
    cmd += ["--n-steps", f"{model}={args.n_steps[model]}", "--n-examples", f"{model}={args.n_examples[model]}"]
    for flag, value in (
        ("--repeat", args.repeat),
        ("--toy-cache", args.toy_cache),
        ("--budget-mb", args.budget_mb),
        ("--internal-batch-size", args.internal_batch_size),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{lib}/{model} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _world_cache(model: str, cache: str | None) -> str | None:
    """The first of ``--toy-cache`` and the default cache (``$UNPACT_CACHE`` or ``~/.cache/unpact``) that
    holds the model's toy world, or None."""
    default = os.environ.get("UNPACT_CACHE") or str(Path.home() / ".cache" / "unpact")
    for root in (cache, default):
        if root and any(Path(root).glob(f"toyworld-{WORLDS[model]}-*/config.json")):
            return root
    return None


def _report(model: str, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Print one model's table; return its row for the JSON output."""
    first = next(iter(runs.values()))
    print(
        f"\n== {model}: {first['params_m']:.1f}M params, {first['n_examples']} examples, answer tokens "
        f"{first['answer_tokens']}, prompt tokens {first['prompt_tokens']}, n_steps={first['n_steps']}, "
        f"{first['threads']} threads"
    )
    print(
        f"{'':10} {'seconds':>8} {'cpu s':>7} {'rel compl. err':>14} {'peak RSS MB':>12} {'at start':>9}"
        f" {'x inference':>12} {'GFLOP/s / matmul (wall)':>24} {'GFLOP/cpu-s / matmul (cpu)':>27}"
    )
    inf = runs.get("inference")
    row: dict[str, Any] = {"model": model, **runs}
    for name, r in runs.items():
        ratio = r["rss_peak_mb"] / inf["rss_peak_mb"] if inf else float("nan")
        if inf and name != "inference":
            row[f"{name}_peak_over_inference"] = ratio
        err = f"{max(r['completeness_rel']):.1e}" if r["completeness_rel"] else "-"
        wall = f"{r['gflops_achieved']:.1f} / {r['gflops_matmul']:.1f} = {r['efficiency']:.0%}"
        cpu = f"{r['gflops_per_cpu_s']:.1f} / {r['gflops_matmul_per_cpu_s']:.1f} = {r['efficiency_cpu']:.0%}"
        print(
            f"{name:10} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f} {err:>14} {r['rss_peak_mb']:>12.0f}"
            f" {r['rss_start_mb']:>9.0f} {ratio:>12.2f} {wall:>24} {cpu:>27}"
        )
    if "unpact" in runs:
        u = runs["unpact"]
        print(f"unpact rows per forward: {u['rows_per_forward']} (memory budget {u['budget_mb']:.0f} MB)")
    if "unpact" in runs and "captum" in runs:
        u, c = runs["unpact"], runs["captum"]
        row["speedup"] = c["seconds"] / u["seconds"]
        row["speedup_cpu"] = c["cpu_seconds"] / u["cpu_seconds"]
        row["max_rel_diff_scores"] = max(
            max(abs(a - b) for a, b in zip(su, sc)) / max(1e-12, max(abs(b) for b in sc))
            for su, sc in zip(u["scores"], c["scores"])
        )
        print(
            f"speed-up (captum / unpact): {row['speedup']:.1f}x wall-clock, {row['speedup_cpu']:.1f}x CPU time; "
            f"max relative difference of the attributions: {row['max_rel_diff_scores']:.1e}"
        )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of: {', '.join(MODELS)}")
    p.add_argument("--libs", default=",".join(LIBS), help=f"comma list of: {', '.join(LIBS)}")
    p.add_argument(
        "--n-steps", default="toy=50,audit=16,gpt2-small=16", help="steps per model, e.g. toy=50,gpt2-small=16"
    )
    p.add_argument("--n-examples", default="toy=8,audit=32,gpt2-small=2", help="examples per model")
    p.add_argument(
        "--toy-cache", default=None, help="a cache dir holding toy worlds (else $UNPACT_CACHE or ~/.cache/unpact)"
    )
    p.add_argument("--budget-mb", type=float, default=None, help="unpact's memory_budget_mb (default: its own)")
    p.add_argument("--internal-batch-size", type=int, default=None, help="unpact's internal_batch_size")
    p.add_argument("--repeat", type=int, default=1, help="time each run this often; report the fastest")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--worker", choices=LIBS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def per_model(v: str) -> dict[str, int]:
        if "=" not in v:
            return {m: int(v) for m in MODELS}
        return {k: int(x) for k, x in (kv.split("=") for kv in v.split(","))}

    args.n_steps, args.n_examples = per_model(args.n_steps), per_model(args.n_examples)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.models, args)))
        return 0
    rows = []
    for model in args.models.split(","):
        if model in WORLDS and _world_cache(model, args.toy_cache) is None:
            print(
                f"{model}: the {WORLDS[model]} toy world is not in the cache; build it once with `python -c "
                f"\"from unpact.toyworld import build_toyworld; build_toyworld('{WORLDS[model]}')\"` (skipped)"
            )
            continue
        rows.append(_report(model, {lib: _run_worker(lib, model, args) for lib in args.libs.split(",")}))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
