"""Whether two models' tokenizers split text the same way (models meant to be compared)."""

from __future__ import annotations

from typing import Any

from unpact.errors import InputError

__all__ = ["check_same_tokenizer"]


def check_same_tokenizer(a: Any, b: Any, *, allow_added: bool = False) -> tuple[str, ...]:
    """Raise if two tokenizers would split text differently (models meant to be compared).

    Args:
        a: The reference tokenizer (the base model's).
        b: The other model's tokenizer.
        allow_added: Accept ``b`` = ``a`` plus tokens added at the end of the vocabulary (ids
            ``len(a)...``), as an unlearning method that adds a token (UniErase) leaves it: text
            without those tokens is split as ``a`` splits it.

    Returns:
        The tokens ``b`` added (empty when the vocabularies are equal).

    Raises:
        InputError: Naming the first difference found (vocabulary size, entries or special tokens).
    """
    if a is b:
        return ()
    fix = "compare models that share a tokenizer (the unlearned model's tokenizer is its base model's)"
    va, vb = a.get_vocab(), b.get_vocab()
    added: tuple[str, ...] = ()
    if allow_added and len(vb) > len(va) and all(vb.get(k) == v for k, v in va.items()):
        extra = {k: v for k, v in vb.items() if k not in va}
        if all(v >= len(va) for v in extra.values()) and set(extra) <= set(b.get_added_vocab()):
            added = tuple(sorted(extra, key=extra.__getitem__))
            vb = {k: v for k, v in vb.items() if k in va}
    if allow_added:
        fix = (
            "the other tokenizer may only add tokens appended at the end of the base vocabulary (ids "
            f"{len(va)} and up, as UniErase adds its token); every base token must keep its id"
        )
    if len(va) != len(vb):
        raise InputError(
            f"the two models' tokenizers differ (vocabulary sizes {len(va)} vs {len(vb)})",
            source="check_same_tokenizer",
            fix=fix,
        )
    if va != vb:
        diff = next(k for k in va if vb.get(k) != va[k])
        raise InputError(
            f"the two models' tokenizers differ (token {diff!r} has ids {va[diff]} vs {vb.get(diff)})",
            source="check_same_tokenizer",
            fix=fix,
        )
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if getattr(a, attr, None) != getattr(b, attr, None):
            raise InputError(
                f"the two models' tokenizers differ in {attr}: {getattr(a, attr, None)} vs {getattr(b, attr, None)}",
                source="check_same_tokenizer",
                fix=fix,
            )
    return added
