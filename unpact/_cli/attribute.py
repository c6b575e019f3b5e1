"""``unpact attribute``: which prompt tokens carry the answer (integrated gradients or leave-one-out)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from unpact._cli._common import add_example_args, subject_and_example

logger = logging.getLogger(__name__)


def _baseline(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def register(subparsers: Any) -> None:
    """Add the ``attribute`` subcommand."""
    p = subparsers.add_parser(
        "attribute",
        help="attribute an answer to the prompt tokens (IG or leave-one-out)",
        description="Attribute the teacher-forced answer log-probability to the prompt tokens and words.",
    )
    add_example_args(p, answer_help="the answer text to attribute")
    p.add_argument("--method", choices=["ig", "loo"], default="ig", help="integrated gradients or leave-one-out")
    p.add_argument("--target", choices=["mean", "sum"], default="mean", help="mean or sum of answer log-probs")
    p.add_argument("--n-steps", type=int, default=50, help="IG quadrature steps (default 50)")
    p.add_argument("--ig-method", default="gausslegendre", help="IG quadrature: gausslegendre or riemann_*")
    p.add_argument(
        "--baseline", type=_baseline, default="pad", help="IG baseline: pad, eos, bos, unk, mask, zero or a token id"
    )
    p.add_argument("--per-answer-token", action="store_true", help="also compute the answer x prompt matrix")
    p.add_argument("--save", metavar="PATH", help="also save the result (.npz) to PATH")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from unpact.attribution import attribute

    subject, ex = subject_and_example(args)
    kw: dict[str, Any] = {"target": args.target, "per_answer_token": args.per_answer_token}
    if args.method == "ig":
        kw.update(n_steps=args.n_steps, ig_method=args.ig_method, baseline=args.baseline)
    res = attribute(subject, ex, method=args.method, **kw)
    if args.save:
        res.save(args.save)
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False, indent=1))
        return 0
    print(render_table(res))
    return 0


def render_table(res: Any) -> str:
    """Readable per-token and per-word table of an :class:`~unpact.attribution.Attribution`."""
    lines = [
        f"model: {res.provenance.model if res.provenance else '?'}   method: {res.method}   target: {res.target}",
        f"answer: {''.join(res.answer_tokens)!r}   F(x) = {res.value:.4f}",
    ]
    if res.completeness_error is not None:
        lines.append(
            f"F(baseline) = {res.baseline_value:.4f}   completeness error = {res.completeness_error:+.2e}"
            f" ({100 * res.relative_completeness_error:.2f}% of F(x) - F(baseline))"
        )
    lines += ["", f"{'#':>3}  {'token':<16} {'score':>10}  word"]
    for i, (t, s, w) in enumerate(zip(res.tokens, res.token_scores, res.token_to_word)):
        lines.append(f"{i:>3}  {t!r:<16} {s:>+10.4f}  {res.words[w] if w >= 0 else '-'}")
    shares = res.word_shares()
    lines += ["", f"{'word':<20} {'score':>10} {'share':>7}"]
    for w, s, sh in zip(res.words, res.word_scores, shares):
        lines.append(f"{w:<20} {s:>+10.4f} {100 * sh:>6.1f}%")
    return "\n".join(lines)
