"""Arguments shared by the single-example tracer commands (``attribute``, ``lens``, ``circuit``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_example_args(p: argparse.ArgumentParser, *, answer_help: str = "the answer text (teacher-forced)") -> None:
    """Add ``--model``, ``--prompt``, ``--answer`` and ``--json`` to a tracer command's parser."""
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--prompt", required=True, help="the prompt / question text")
    p.add_argument("--answer", required=True, help=answer_help)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def subject_and_example(args: argparse.Namespace, **example_kw: Any) -> tuple[Any, Any]:
    """Load ``--model`` (on ``--device`` if the command has one) and build the example from the arguments."""
    from unpact.data import Example
    from unpact.models import load_model

    subject = load_model(args.model, device=getattr(args, "device", None))
    return subject, Example("cli", args.prompt, args.answer, **example_kw)
