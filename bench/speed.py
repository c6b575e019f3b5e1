"""Benchmark: the speed figures of the audit's own machinery, each against a reference timed in the same run.

* ``decode``: greedy decoding of the toy world's forget items with the KV cache (``unpact.forward.decode``)
  vs re-running the whole sequence at every step (``use_cache=False``), same tokens checked.
* ``sampling``: a sampling attack's samples decoded from one prompt cache vs one prompt pass per sample.
* ``threads``: toy-world training steps per second of one model on 1 vs 2 torch threads.
* ``processes``: the base and retain-only models trained side by side in two processes (one thread
  each) vs one after the other (the toy world's build), in steps per second of the pair.
* ``audit``: seconds per stage of a finished audit (its ``timings.json``), as a share of the audit's
  total, and the time estimated before it started vs the time it took.

Usage:
    .venv/bin/python bench/speed.py [--preset default] [--audit runs/demo] [--out bench/results/speed.json]

The toy world of ``--preset`` is built if it is not in the cache (``$UNPACT_CACHE``, default
``~/.cache/unpact``; minutes for ``default``). Timings on a busy machine are noisy; the ratios are
what to read.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any


def _decode(world: Any, n_items: int, max_new: int, batch: int) -> dict[str, Any]:
    from unpact.data import encode
    from unpact.forward import decode, prompt_pass

    s = world.load_base()
    items = world.forget[:n_items]
    encs = [encode(s.tokenizer, e) for e in items]
    chunks = [encs[i : i + batch] for i in range(0, len(encs), batch)]
    out: dict[str, Any] = {}
    tokens: dict[bool, list[list[int]]] = {}
    for use_cache in (True, False):
        t = time.perf_counter()
        toks: list[list[int]] = []
        for ch in chunks:
            first = prompt_pass(s, [e.prompt_ids for e in ch], [e.answer_ids for e in ch], keep_cache=use_cache)
            toks += decode(s, first, max_new_tokens=max_new, use_cache=use_cache)
        out["cached_s" if use_cache else "uncached_s"] = time.perf_counter() - t
        tokens[use_cache] = toks
    out["speedup"] = out["uncached_s"] / out["cached_s"]
    out["same_tokens"] = tokens[True] == tokens[False]
    out["items"], out["max_new_tokens"], out["batch"] = len(items), max_new, batch
    return out


def _sampling(world: Any, n_items: int, max_new: int, samples: int) -> dict[str, Any]:
    import torch

    from unpact.data import encode
    from unpact.forward import decode, prompt_pass

    s = world.load_base()
    encs = [encode(s.tokenizer, e) for e in world.forget[:n_items]]
    prompts = [e.prompt_ids for e in encs]
    t = time.perf_counter()
    first = prompt_pass(s, prompts, keep_cache=True)
    decode(s, first, max_new_tokens=max_new, sample=True, num_samples=samples, generator=torch.Generator())
    shared = time.perf_counter() - t
    t = time.perf_counter()
    first = prompt_pass(s, [p for p in prompts for _ in range(samples)], keep_cache=True)
    decode(s, first, max_new_tokens=max_new, sample=True, generator=torch.Generator())
    separate = time.perf_counter() - t
    return {"shared_cache_s": shared, "prompt_per_sample_s": separate, "speedup": separate / shared}


def _train_steps(cfg: dict[str, Any], threads: int, steps: int) -> float:
    """Steps per second of the toy world's model recipe on ``threads`` threads (random data of the right shape)."""
    import torch

    from unpact.testing import tiny_tokenizer
    from unpact.toyworld.build import model_for
    from unpact.toyworld.train import TrainItem, num_threads, train_lm

    tok = tiny_tokenizer(cfg["vocab_size"])
    model = model_for(cfg, tok)
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4 * cfg["batch_size"]):
        n = int(torch.randint(12, 40, (1,), generator=gen))
        ids = torch.randint(4, len(tok), (n,), generator=gen).tolist()
        items.append(TrainItem(ids=tuple(ids), loss_start=1))
    with num_threads(threads):
        t = time.perf_counter()
        train_lm(
            model,
            items,
            steps=steps,
            batch_size=cfg["batch_size"],
            lr=1e-3,
            pad_id=tok.pad_token_id,
            seed=0,
            progress=False,
        )
        return steps / (time.perf_counter() - t)


def _training(preset: str, steps: int) -> dict[str, Any]:
    from unpact.toyworld import world_config

    cfg = world_config(preset)
    one = _train_steps(cfg, 1, steps)
    two = _train_steps(cfg, 2, steps)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        # each process times its own steps (process start-up excluded); run together, their rates add up
        pair_parallel = sum(pool.map(_train_steps, [cfg, cfg], [1, 1], [steps, steps]))
    return {
        "steps": steps,
        "one_thread_steps_per_s": one,
        "two_threads_steps_per_s": two,
        "threads_speedup": two / one,
        "pair_in_two_processes_steps_per_s": pair_parallel,
        "processes_speedup": pair_parallel / one,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def _audit(path: Path) -> dict[str, Any] | None:
    from unpact.audit import AuditDir

    if not path.exists():
        return None
    t = AuditDir.open(path).read_timings()
    if not t:
        return None
    total = float(t["total_seconds"]) or 1.0
    return {
        "dir": str(path),
        "total_seconds": total,
        "estimated_total_seconds": t.get("estimated_total_seconds"),
        "estimate_over_actual": (t.get("estimated_total_seconds") or 0.0) / total,
        "stages": {k: {"seconds": v, "share": v / total} for k, v in t["seconds"].items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", choices=("micro", "default"))
    ap.add_argument("--items", type=int, default=64, help="forget items decoded (default 64)")
    ap.add_argument("--train-steps", type=int, default=100, help="training steps per timing (default 100)")
    ap.add_argument("--audit", default="runs/demo", help="a finished audit directory (its timings.json)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    import torch

    from unpact.toyworld import build_toyworld

    torch.set_num_threads(1)
    world = build_toyworld(args.preset, progress=False)
    max_new = 4 + max(len(world.load_base().tokenizer(" " + e.answer)["input_ids"]) for e in world.forget)
    res: dict[str, Any] = {"preset": args.preset, "torch": torch.__version__}
    res["decode"] = _decode(world, args.items, max_new, 32)
    print("decode:", json.dumps(res["decode"]), flush=True)
    res["sampling"] = _sampling(world, min(args.items, 16), max_new, 8)
    print("sampling:", json.dumps(res["sampling"]), flush=True)
    res["training"] = _training(args.preset, args.train_steps)
    print("training:", json.dumps(res["training"]), flush=True)
    res["audit"] = _audit(Path(args.audit))
    print("audit:", json.dumps(res["audit"]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
