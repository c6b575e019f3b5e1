"""Grouping sub-word tokens (BPE pieces) into the words a reader sees.

Keywords are words ("Paris", "born"), while attributions come per token ("ĠPar", "is"). This module
maps each prompt token to a word of the prompt text, so token scores can be summed per word.

A *word* is a run of word characters (letters, digits, underscore, inner apostrophes or hyphens,
e.g. ``"Lovelace's"``, ``"well-known"``) or a single punctuation character (``"?"``). A token is
assigned to the word its characters overlap most; a token that covers only whitespace is attached
to the next word (or the previous one at the end of the text), so that per-word scores always sum
to the per-token scores.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["WORD_PATTERN", "word_spans", "token_char_spans", "group_tokens"]

WORD_PATTERN = re.compile(r"\w+(?:['\u2019\-]\w+)*|[^\w\s]")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, stop)`` of the words of ``text`` (see the module docstring)."""
    return [m.span() for m in WORD_PATTERN.finditer(text)]


def token_char_spans(tokenizer: Any, text: str, ids: Sequence[int], *, special: bool = True) -> list[tuple[int, int]]:
    """Character span in ``text`` of each token of ``ids`` (the tokenization of ``text``).

    Uses the fast tokenizer's offset mapping when it reproduces ``ids``; otherwise decodes growing
    prefixes (works for any tokenizer whose decoding is prefix-stable). Special tokens get ``(0, 0)``.

    Args:
        tokenizer: A Hugging Face tokenizer.
        text: The text that was tokenized.
        ids: Its token ids, ``tokenizer(text, add_special_tokens=special)["input_ids"]`` (a prefix of
            them is fine, e.g. without an EOS the tokenizer appends).
        special: Whether ``ids`` were made with the tokenizer's special tokens added.

    Returns:
        One ``(start, stop)`` per id.
    """
    ids = [int(i) for i in ids]
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        if list(enc["input_ids"])[: len(ids)] == ids:
            special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
            return [(0, 0) if i in special_ids else (int(a), int(b)) for i, (a, b) in zip(ids, enc["offset_mapping"])]
        logger.debug("offset mapping does not match the ids; decoding prefixes instead")
    spans: list[tuple[int, int]] = []
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    # special tokens the tokenizer added (``special``) are not in the text; those of a rendered chat
    # template are, and decoding must keep them so the offsets stay aligned with the text
    in_text = not special
    prev = 0
    kept: list[int] = []
    for i in ids:
        if i in special_ids and not in_text:
            spans.append((0, 0))
            continue
        kept.append(i)
        stop = min(len(tokenizer.decode(kept, skip_special_tokens=not in_text)), len(text))
        spans.append((0, 0) if i in special_ids else (prev, stop))
        prev = max(prev, stop)
    return spans


def group_tokens(
    tokenizer: Any,
    text: str,
    ids: Sequence[int],
    positions: Sequence[int] | None = None,
    spans: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Words of ``text`` and, for each selected token, the index of its word.

    Args:
        tokenizer: The tokenizer that produced ``ids``.
        text: The prompt text.
        ids: ``tokenizer(text, add_special_tokens=True)["input_ids"]``.
        positions: Indices into ``ids`` of the tokens to map (default: all).
        spans: Each token's ``(start, stop)`` characters in ``text`` when the caller knows them (e.g.
            :attr:`unpact.data.Encoded.question_chars` for a question inside a template); default
            :func:`token_char_spans`.

    Returns:
        ``(words, token_to_word)``: the word strings that at least one selected token maps to,
        in text order, and an ``int64`` array ``(len(positions),)`` of indices into ``words``
        (``-1`` only for special tokens or texts without any word).
    """
    positions = list(range(len(ids))) if positions is None else [int(p) for p in positions]
    spans_all = list(spans) if spans is not None else token_char_spans(tokenizer, text, ids)
    wspans = word_spans(text)
    raw = np.full(len(positions), -1, dtype=np.int64)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    pending: list[int] = []  # whitespace-only or empty tokens waiting for the next word
    for j, p in enumerate(positions):
        a, b = spans_all[p]
        if a == b or not wspans:
            # Empty spans: special tokens get no word; other empty pieces (e.g. a lone SentencePiece
            # "▁") join the next word so word scores still sum to the token scores.
            if a != b or int(ids[p]) not in special:
                pending.append(j)
            continue
        overlaps = [(min(b, wb) - max(a, wa), -k) for k, (wa, wb) in enumerate(wspans)]
        best, neg_k = max(overlaps)
        if best <= 0:  # only whitespace: attach to the next word that starts after it
            nxt = next((k for k, (wa, _) in enumerate(wspans) if wa >= b), None)
            if nxt is None:
                pending.append(j)
                continue
            raw[j] = nxt
        else:
            raw[j] = -neg_k
        for q in pending:
            raw[q] = raw[j]
        pending = []
    if pending:
        last = next((int(raw[q]) for q in range(len(raw) - 1, -1, -1) if raw[q] >= 0), -1)
        for q in pending:
            raw[q] = last
    used = sorted({int(k) for k in raw if k >= 0})
    remap = {k: i for i, k in enumerate(used)}
    words = [text[wspans[k][0] : wspans[k][1]] for k in used]
    token_to_word = np.array([remap.get(int(k), -1) for k in raw], dtype=np.int64)
    return words, token_to_word
