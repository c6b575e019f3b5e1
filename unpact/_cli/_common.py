"""Arguments the commands share: how to load a model, how to prompt it, and the single-example tracers' inputs.

The options are defined here once: every command that loads a model takes ``--tokenizer``,
``--device``, ``--dtype``, ``--trust-remote-code`` and, for big models, ``--device-map``,
``--max-memory`` and ``--offload-folder``, and every command that puts questions to a
model takes the prompt-format options (``--template``, ``--answer-sep``, ``--chat-template``,
``--system-prompt``; see :class:`unpact.prompts.PromptFormat`).
"""

from __future__ import annotations

import argparse
from typing import Any


def _unescape(text: str) -> str:
    r"""``\n`` and ``\t`` typed on a command line become a newline and a tab (templates need them)."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def add_model_args(p: argparse.ArgumentParser | Any) -> None:
    """Add ``--tokenizer``, ``--device``, ``--dtype``, ``--device-map``, ``--max-memory``, ``--offload-folder``
    and ``--trust-remote-code``."""
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's own)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cpu)")
    p.add_argument("--dtype", default=None, help="weights dtype: float32, bfloat16, float16 (default: as saved)")
    p.add_argument(
        "--device-map",
        default=None,
        help="spread a big model over devices (accelerate): auto, balanced, sequential, or a JSON file / inline "
        'JSON {module name: device}, e.g. \'{"model.embed_tokens": 0, "lm_head": "cpu"}\' (not with --device)',
    )
    p.add_argument(
        "--max-memory", default=None, help="per-device limits for --device-map auto, e.g. 0=20GiB,1=20GiB,cpu=60GiB"
    )
    p.add_argument("--offload-folder", default=None, help="where 'disk' entries of --device-map are written")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="allow custom model code from the checkpoint (off by default)"
    )


def add_format_args(p: argparse.ArgumentParser | Any) -> None:
    """Add the prompt-format options."""
    p.add_argument(
        "--template",
        default=None,
        type=_unescape,
        help='prompt template holding {question}, e.g. "Question: {question}\\nAnswer:" (\\n is a newline; default: '
        "the bare question)",
    )
    p.add_argument(
        "--answer-sep",
        default=None,
        type=_unescape,
        help="text between prompt and answer (default: a space, unless the prompt ends in whitespace)",
    )
    p.add_argument(
        "--chat-template", action="store_true", default=None, help="put questions through the tokenizer's chat template"
    )
    p.add_argument("--system-prompt", default=None, type=_unescape, help="system prompt (with --chat-template)")


def format_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The prompt-format options given, as :class:`unpact.audit.AuditConfig` settings."""
    given = {
        "template": args.template,
        "answer_sep": args.answer_sep,
        "chat_template": args.chat_template,
        "system_prompt": args.system_prompt,
    }
    return {k: v for k, v in given.items() if v is not None}


def prompt_format(args: argparse.Namespace) -> Any:
    """The :class:`unpact.prompts.PromptFormat` of the options (the bare question when none is given)."""
    from unpact.prompts import QUESTION_FIELD, PromptFormat

    return PromptFormat(
        template=args.template if args.template is not None else QUESTION_FIELD,
        answer_sep=args.answer_sep,
        chat=bool(args.chat_template),
        system_prompt=args.system_prompt,
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`unpact.load_model` from the model options.

    The placement options (``device_map``, ``max_memory``, ``offload_folder``) are included only
    when given, so callers that take just the four basic ones keep working.

    Raises:
        InputError: An unreadable ``--device-map`` or ``--max-memory`` (see :mod:`unpact._devices`).
    """
    from unpact._devices import parse_device_map, parse_max_memory

    opts: dict[str, Any] = {
        "tokenizer": args.tokenizer,
        "device": args.device,
        "dtype": args.dtype,
        "trust_remote_code": args.trust_remote_code,
    }
    placement = {
        "device_map": parse_device_map(getattr(args, "device_map", None)),
        "max_memory": parse_max_memory(getattr(args, "max_memory", None)),
        "offload_folder": getattr(args, "offload_folder", None),
    }
    opts.update({k: v for k, v in placement.items() if v is not None})
    return opts


def load_subject(args: argparse.Namespace, path: str) -> Any:
    """Load the model at ``path`` with the model options, put to in the prompt format of the options."""
    from unpact.models import load_model

    return load_model(path, **load_options(args), prompt_format=prompt_format(args))


def add_example_args(p: argparse.ArgumentParser, *, answer_help: str = "the answer text (teacher-forced)") -> None:
    """Add ``--model``, ``--prompt``, ``--answer``, ``--json``, the model and the prompt-format options."""
    p.add_argument("--model", required=True, help="local Hugging Face model directory")
    p.add_argument("--prompt", required=True, help="the question text (the template, if any, is put around it)")
    p.add_argument("--answer", required=True, help=answer_help)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_args(p)
    add_format_args(p)


def subject_and_example(args: argparse.Namespace, **example_kw: Any) -> tuple[Any, Any]:
    """Load ``--model`` and build the example from the arguments."""
    from unpact.data import Example

    return load_subject(args, args.model), Example("cli", args.prompt, args.answer, **example_kw)
