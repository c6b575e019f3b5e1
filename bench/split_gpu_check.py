"""Check that tracers give the same numbers on a model split over a GPU and the CPU as unsplit.

Loads a small model (the micro toy world's base from ``$UNPACT_CACHE`` if built there, else a tiny
random Llama) three ways: unsplit on the CPU (the reference), *split* (block 0 and the embedding on
``cuda:0``, the rest computed on the CPU: accelerate's ``dispatch_model`` with ``main_device="cpu"``)
and *offload* (``load_model(path, device_map=...)`` with ``"cpu"`` entries: those weights stay on
the CPU and are streamed to ``cuda:0`` for every forward). It then compares integrated gradients,
the logit lens, EAP scores and one attack's generation, prints a table and exits 1 on a mismatch.

Usage::

    python bench/split_gpu_check.py            # needs a CUDA GPU; exits 2 with a message without one
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOL = {"ig": 2e-3, "lens": 2e-3, "eap": 2e-3}


def _model() -> tuple[torch.nn.Module, Any, str]:
    """``(model, tokenizer, name)``: the toy world base from ``$UNPACT_CACHE``, else a tiny Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = os.environ.get("UNPACT_CACHE")
    for d in sorted(Path(cache).glob("**/base/config.json")) if cache else []:
        path = d.parent
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        return model, AutoTokenizer.from_pretrained(path), str(path)
    from unpact.testing import tiny_model

    model, tok = tiny_model("llama")
    return model, tok, "tiny-llama (unpact.testing)"


def _split_map(model: torch.nn.Module, gpu: str | int, rest: str | int) -> dict[str, str | int]:
    """Embedding and the first half of the blocks on ``gpu``, the rest on ``rest``."""
    from unpact.models import load_model

    s = load_model(model)
    names = {id(m): n for n, m in model.named_modules()}
    half = max(1, s.n_layers // 2)
    dmap: dict[str, str | int] = {names[id(s.embed)]: gpu}
    for i, block in enumerate(s.blocks):
        dmap[names[id(block)]] = gpu if i < half else rest
    dmap[names[id(s.final_norm)]] = rest
    dmap[names[id(s.unembed)]] = rest
    for n, child in model.named_modules():  # leftovers (rotary embeddings...) next to the embedding
        covered = any(n == k or n.startswith(k + ".") or k.startswith(n + ".") or not n for k in dmap)
        if not covered and not list(child.children()):
            dmap[n] = gpu
    return dmap


def _results(s: Any, ex: Any, corrupt: str) -> dict[str, Any]:
    from unpact.attacks import run_attack
    from unpact.attribution import integrated_gradients
    from unpact.circuits import edge_attribution_patching
    from unpact.lens import logit_lens

    return {
        "ig": integrated_gradients(s, [ex], n_steps=16)[0].token_scores,
        "lens": logit_lens(s, [ex])[0].logprob,
        "eap": edge_attribution_patching(s, ex, corrupt=corrupt).scores,
        "attack": run_attack(s, [ex], "plain", max_new_tokens=4)[0].samples,
    }


def main() -> int:
    if not torch.cuda.is_available():
        print("split_gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine.")
        return 2
    from accelerate import dispatch_model

    from unpact.data import Example
    from unpact.models import load_model

    model, tok, name = _model()
    ex = Example("ada", "Where was Ada Lovelace born?", "London", subject="Ada Lovelace", keywords=("born",))
    corrupt = "Where was The Lovelace born?"
    ref = _results(load_model(copy.deepcopy(model), tok, name="unsplit"), ex, corrupt)

    split_model = dispatch_model(copy.deepcopy(model), device_map=_split_map(model, 0, "cpu"), main_device="cpu")
    split = load_model(split_model, tok, name="split")
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        offload = load_model(d, device_map=_split_map(model, 0, "cpu"), name="offload")
        runs = {"split cuda:0+cpu": _results(split, ex, corrupt), "offload cpu->cuda:0": _results(offload, ex, corrupt)}
    print(f"model: {name}; reference: unsplit on the CPU")
    print(f"{'config':22s} {'check':7s} {'max |diff|':>12s} {'tolerance':>10s}  ok")
    bad = 0
    for config, res in runs.items():
        for key in ("ig", "lens", "eap"):
            diff = float(np.max(np.abs(np.asarray(res[key]) - np.asarray(ref[key]))))
            ok = diff <= TOL[key]
            bad += not ok
            print(f"{config:22s} {key:7s} {diff:12.2e} {TOL[key]:10.0e}  {'yes' if ok else 'NO'}")
        same = res["attack"] == ref["attack"]
        bad += not same
        verdict = "equal" if same else "differs"
        print(f"{config:22s} {'attack':7s} {verdict:>12s} {'exact':>10s}  {'yes' if same else 'NO'}")
    print("all equal within tolerance" if not bad else f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
