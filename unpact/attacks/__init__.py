"""Keyword-emphasis attacks: try to bring a "forgotten" answer back without touching the weights.

unPact's finding is that unlearning often only removes the model's *focus* on the prompt's key
words; emphasising them brings the answer back. An attack here is a named recipe that turns a
(question, key words) pair into model outputs, with no weight change:

``text``
    A prompt rewrite ``fn(example, keywords) -> Example``: ``restate`` (``"Focus on: X, Y. <q>"``),
    ``repeat`` (each key word doubled in place), ``quote`` (``"X"``), ``capitalise`` (``X`` in
    upper case), ``front`` (``"X, Y: <q>"``) and combinations written ``"restate+quote"``.
    Decoded greedily.
``sampling``
    The plain prompt, ``num_samples`` answers sampled at ``temperature``; the item counts as
    recovered if any sample matches (the paper's second attack). Its chance control matters most:
    sampling from a model that never knew the fact also hits sometimes.
``whitebox``
    Inference-time interventions at the key words' token positions: ``embed_scale`` multiplies
    their token embeddings (through :func:`unpact.hooks.hooked` on the ``embed`` site) and
    ``attn_bias`` adds a constant to every attention logit that points at them (an additive 4-D
    attention mask, in every layer). Weights, train/eval mode and ``requires_grad`` flags are
    untouched and no hook outlives the call.

Register your own with :func:`register_attack`; :func:`run_attack` runs any registered attack on
a list of examples and returns, per example, the decoded answer(s), whether the gold first answer
token is the top-1 prediction, and the teacher-forced mean log-probability of the gold answer, all
under the same intervention.

Scoring and generation share one forward pass per batch (:func:`unpact.forward.prompt_pass`: left-padded
prompts, the gold answers teacher-forced after them); decoding continues from that pass's KV cache
(:func:`unpact.forward.decode`), with the attention bias kept for every generated token, and all
samples of a sampling attack start from the one prompt cache.

Modules: :mod:`~unpact.attacks.registry` (:class:`Attack`, the registry, composition),
:mod:`~unpact.attacks.rewrites` (the built-in text attacks), :mod:`~unpact.attacks.keywords`
(key-word spans and token positions, the answer-leak guard) and :mod:`~unpact.attacks.run`
(:func:`run_attack`). Import from ``unpact.attacks``.
"""

from __future__ import annotations

import logging

# Names outside __all__ are re-exported with `as` (explicit re-exports): they were importable from
# `unpact.attacks` before it became a package (the text transforms, `AttackKind`, and helpers that
# other modules and tests reach, such as `_registry` and `_safe_keywords`).
from unpact.attacks.keywords import _present as _present
from unpact.attacks.keywords import _replace_keywords as _replace_keywords
from unpact.attacks.keywords import _safe_keywords as _safe_keywords
from unpact.attacks.keywords import find_keyword_spans, key_positions
from unpact.attacks.registry import _REGISTRY as _REGISTRY
from unpact.attacks.registry import (
    DEFAULT_ATTACKS,
    Attack,
    TextTransform,
    apply_text_attack,
    get_attack,
    list_attacks,
    register_attack,
)
from unpact.attacks.registry import AttackKind as AttackKind
from unpact.attacks.registry import _builtin as _builtin
from unpact.attacks.registry import _registry as _registry
from unpact.attacks.rewrites import capitalise as capitalise
from unpact.attacks.rewrites import front as front
from unpact.attacks.rewrites import quote as quote
from unpact.attacks.rewrites import repeat as repeat
from unpact.attacks.rewrites import restate as restate
from unpact.attacks.run import AttackOutput, generate_answers, run_attack, unlearning_token_ids
from unpact.attacks.run import _run_chunk as _run_chunk

__all__ = [
    "unlearning_token_ids",
    "Attack",
    "AttackOutput",
    "TextTransform",
    "register_attack",
    "get_attack",
    "list_attacks",
    "apply_text_attack",
    "find_keyword_spans",
    "key_positions",
    "run_attack",
    "generate_answers",
    "DEFAULT_ATTACKS",
]

logger = logging.getLogger(__name__)
