"""``unpact lens``: logit-lens decoding of an answer, layer by layer."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from unpact._cli._common import add_example_args, subject_and_example

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``lens`` subcommand."""
    p = subparsers.add_parser(
        "lens",
        help="logit lens: probability and rank of each answer token per layer",
        description="Decode each layer's residual stream through the final norm and unembedding.",
    )
    add_example_args(p)
    p.add_argument("--top-k", type=int, default=5, help="top decoded tokens kept per layer and position")
    p.add_argument("--all-positions", action="store_true", help="JSON: include prompt positions, not only the answer's")
    p.add_argument("--save", metavar="PATH", help="also save the trajectory (.npz) to PATH")
    p.add_argument(
        "--tuned-lens",
        metavar="PATH",
        help="decode through this tuned lens (a TunedLens .npz fit on the same model; see docs/lens.md)",
    )
    p.add_argument(
        "--fit-tuned-lens",
        metavar="TEXT_FILE",
        help="fit a tuned lens on this text file (paragraphs split at blank lines; never the forget set) and "
        "decode through it; with --save-tuned-lens, keep it",
    )
    p.add_argument("--save-tuned-lens", metavar="PATH", help="save the lens fit by --fit-tuned-lens to PATH")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from unpact.lens import logit_lens

    subject, ex = subject_and_example(args)
    kw: dict[str, Any] = {}
    if args.save_tuned_lens and not args.fit_tuned_lens:
        from unpact.errors import InputError

        raise InputError(
            "--save-tuned-lens saves the lens --fit-tuned-lens fits, but no --fit-tuned-lens was given",
            source="unpact lens",
            fix="add --fit-tuned-lens TEXT_FILE, or drop --save-tuned-lens",
        )
    if args.tuned_lens and args.fit_tuned_lens:
        from unpact.errors import InputError

        raise InputError("--tuned-lens and --fit-tuned-lens both given", source="unpact lens", fix="give one of them")
    if args.tuned_lens:
        from unpact.representations import TunedLens

        kw = {"method": "tuned", "tuned": TunedLens.load(args.tuned_lens)}
    elif args.fit_tuned_lens:
        from unpact.representations import fit_tuned_lens, load_text_corpus

        lens = fit_tuned_lens(subject, load_text_corpus(args.fit_tuned_lens), progress=True)
        if args.save_tuned_lens:
            lens.save(args.save_tuned_lens)
        kw = {"method": "tuned", "tuned": lens}
    tr = logit_lens(subject, [ex], top_k=args.top_k, **kw)[0]
    if args.save:
        tr.save(args.save)
    if args.json:
        print(json.dumps(tr.to_dict(answer_only=not args.all_positions), ensure_ascii=False, indent=1))
        return 0
    print(render_table(tr))
    return 0


def render_table(tr: Any) -> str:
    """Table: one row per layer, one column per answer token (probability, rank, top-1 prediction)."""
    pos = tr.answer_positions
    gold = [tr.tokens[p + 1] for p in pos]
    width = 24
    lines = [
        f"model: {tr.provenance.model if tr.provenance else '?'}  ({getattr(tr, 'method', 'logit')} lens)",
        "cell = p(gold) / rank / top-1 decoded token",
        "",
        f"{'layer':<7}" + "".join(f"{g!r:<{width}}" for g in gold),
    ]
    for li, name in enumerate(tr.layer_names):
        cells = [f"{tr.prob[li, p]:.3f} / {tr.rank[li, p]} / {str(tr.topk_tokens[li, p, 0])!r}" for p in pos]
        lines.append(f"{name:<7}" + "".join(f"{c:<{width}}" for c in cells))
    return "\n".join(lines)
