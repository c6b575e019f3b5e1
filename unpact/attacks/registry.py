"""The attack registry: :class:`Attack`, the built-in attacks, lookup, ``+`` composition of text attacks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from unpact.attacks.keywords import _safe_keywords
from unpact.attacks.rewrites import capitalise, front, quote, repeat, restate
from unpact.data import Example
from unpact.errors import InputError, UnknownNameError, check_positive

__all__ = [
    "Attack",
    "AttackKind",
    "TextTransform",
    "DEFAULT_ATTACKS",
    "register_attack",
    "get_attack",
    "list_attacks",
    "apply_text_attack",
]

TextTransform = Callable[[Example, Sequence[str]], Example]
AttackKind = Literal["plain", "text", "sampling", "whitebox", "decoding"]


@dataclass(frozen=True)
class Attack:
    """A named way to query a model for a forgotten answer, without changing its weights.

    Attributes:
        name: Registry name.
        kind: ``"plain"`` (no attack, the reference), ``"text"``, ``"sampling"``, ``"whitebox"`` or
            ``"decoding"`` (the unmodified prompt, decoded under a constraint such as a banned token).
        transform: Prompt rewrite for ``text`` attacks.
        num_samples: Answers sampled per item (``sampling``); 1 means greedy.
        temperature: Sampling temperature (``sampling``).
        embed_scale: Factor on the key tokens' embeddings (``whitebox``); 1 = off.
        attn_bias: Added to attention logits towards key positions (``whitebox``); 0 = off.
        ban_unlearning_tokens: Ban the model's unlearning tokens (its ``config.unpact_unlearn``
            record's ``unlearning_tokens``, e.g. UniErase's ``<unl>``) at every decoding step and in the
            first-token rank (``decoding``). A model without such tokens is decoded as ``plain``.
        description: One line for tables and ``--help``.
    """

    name: str
    kind: AttackKind
    transform: TextTransform | None = None
    num_samples: int = 1
    temperature: float = 1.0
    embed_scale: float = 1.0
    attn_bias: float = 0.0
    description: str = ""
    ban_unlearning_tokens: bool = False

    def __post_init__(self) -> None:
        where = f"attack {self.name!r}"
        if self.kind not in ("plain", "text", "sampling", "whitebox", "decoding"):
            raise UnknownNameError(
                f"unknown attack kind {self.kind!r}",
                source=where,
                fix="choose plain, text, sampling, whitebox or decoding",
            )
        if self.kind == "text" and not callable(self.transform):
            raise InputError("a text attack needs a transform fn(example, keywords) -> Example", source=where)
        check_positive("num_samples", self.num_samples, where=where)
        if not self.temperature >= 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature}", source=where)

    @property
    def uses_keywords(self) -> bool:
        """True if the attack needs key words (all but ``plain`` and ``sampling``)."""
        return self.kind in ("text", "whitebox")

    def config(self) -> dict[str, Any]:
        """JSON-ready description (for provenance and the audit's argument hash)."""
        fn = self.transform
        return {
            "name": self.name,
            "kind": self.kind,
            "num_samples": self.num_samples,
            "temperature": self.temperature,
            "embed_scale": self.embed_scale,
            "attn_bias": self.attn_bias,
            **({"ban_unlearning_tokens": True} if self.ban_unlearning_tokens else {}),
            "transform": None
            if fn is None
            else f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
        }


def _builtin() -> dict[str, Attack]:
    return {
        "plain": Attack("plain", "plain", description="the unmodified prompt, greedy (reference, not an attack)"),
        "restate": Attack("restate", "text", restate, description='"Focus on: X, Y. <question>"'),
        "repeat": Attack("repeat", "text", repeat, description="each key word repeated in place"),
        "quote": Attack("quote", "text", quote, description="key words in double quotes"),
        "capitalise": Attack("capitalise", "text", capitalise, description="key words in upper case"),
        "front": Attack("front", "text", front, description='"X, Y: <question>"'),
        "sample": Attack(
            "sample",
            "sampling",
            num_samples=8,
            temperature=1.0,
            description="8 samples at temperature 1; recovered if any matches",
        ),
        "embed_scale": Attack(
            "embed_scale", "whitebox", embed_scale=3.0, description="key tokens' embeddings x3 (hook)"
        ),
        "attn_bias": Attack(
            "attn_bias", "whitebox", attn_bias=2.0, description="+2 on every attention logit towards key positions"
        ),
        "ban_unl": Attack(
            "ban_unl",
            "decoding",
            ban_unlearning_tokens=True,
            description="greedy with the model's unlearning token banned (UniErase's <unl>; plain for others)",
        ),
    }


_REGISTRY: dict[str, Attack] = {}

# The audit's default attack set (each cheap on small models). The audit adds ``ban_unl`` when a model
# has unlearning tokens (UniErase).
DEFAULT_ATTACKS: tuple[str, ...] = (
    "restate",
    "repeat",
    "quote",
    "capitalise",
    "front",
    "restate+repeat",
    "sample",
    "embed_scale",
    "attn_bias",
)


def _registry() -> dict[str, Attack]:
    if not _REGISTRY:
        _REGISTRY.update(_builtin())
    return _REGISTRY


def register_attack(
    name: str,
    attack: Attack | TextTransform,
    *,
    overwrite: bool = False,
    description: str = "",
) -> Attack:
    """Register an attack under ``name``.

    Args:
        name: The registry name (no ``+``: that joins text attacks).
        attack: An :class:`Attack`, or a text transform ``fn(example, keywords) -> Example``.
        overwrite: Replace an existing entry of that name.
        description: One line shown in tables (for a plain function).

    Returns:
        The registered :class:`Attack`.

    Raises:
        InputError: If the name is taken (and ``overwrite`` is False) or contains ``+``, or if
            ``attack`` is neither an Attack nor callable.
    """
    reg = _registry()
    if not isinstance(name, str) or not name or "+" in name:
        raise InputError(f"attack name {name!r} must be a non-empty string without '+' ('+' combines attacks)")
    if name in reg and not overwrite:
        raise InputError(f"an attack named {name!r} is already registered; pass overwrite=True to replace it")
    if isinstance(attack, Attack):
        entry = replace(attack, name=name)
    elif callable(attack):
        entry = Attack(name, "text", attack, description=description or (attack.__doc__ or "").strip().split("\n")[0])
    else:
        raise InputError(
            f"register_attack needs an Attack or a callable fn(example, keywords), got {type(attack).__name__}",
            source=f"attack {name!r}",
        )
    reg[name] = entry
    return entry


def list_attacks(kind: AttackKind | None = None) -> list[str]:
    """Names of the registered attacks (optionally of one kind), in registration order."""
    return [n for n, a in _registry().items() if kind is None or a.kind == kind]


def get_attack(name: str | Attack) -> Attack:
    """Look up an attack; ``"a+b"`` composes text attacks left to right (``b`` applied to ``a``'s output).

    Raises:
        UnknownNameError: Unknown name (the message lists the valid ones).
        InputError: A ``+`` combination of non-text attacks.
    """
    if isinstance(name, Attack):
        return name
    reg = _registry()
    parts = [p.strip() for p in str(name).split("+")]
    for p in parts:
        if p not in reg:
            raise UnknownNameError(
                f"unknown attack {p!r}; registered attacks: {', '.join(reg)}",
                source="attack",
                fix="combine text attacks with '+', register new ones with register_attack",
            )
    if len(parts) == 1:
        return reg[parts[0]]
    steps = [reg[p] for p in parts]
    if any(s.kind != "text" for s in steps):
        others = [s.name for s in steps if s.kind != "text"]
        raise InputError(f"only text attacks combine with '+'; {name!r} mixes in {others}", source="attack")

    def composed(example: Example, keywords: Sequence[str]) -> Example:
        for s in steps:
            example = s.transform(example, keywords)  # type: ignore[misc]
        return example

    composed.__qualname__ = "+".join(parts)
    composed.__module__ = "unpact.attacks"  # recorded by Attack.config (the audit's argument hash)
    return Attack("+".join(parts), "text", composed, description=" then ".join(s.description for s in steps))


def apply_text_attack(attack: str | Attack, example: Example, keywords: Sequence[str]) -> Example:
    """The attacked example for a text (or plain) attack; key words that could leak the answer are never used.

    Args:
        attack: A registered name, a ``"a+b"`` text combination or an :class:`Attack`.
        example: The example.
        keywords: Its key words, a list of strings (``["Ada", "Lovelace"]``).

    Raises:
        InputError: For sampling / white-box attacks (they do not rewrite the prompt), key words
            given as one string, or a transform that does not return an Example.
    """
    a = get_attack(attack)
    if isinstance(keywords, str):
        raise InputError(
            f"keywords is the string {keywords!r}, not a list of key words",
            source="keywords",
            fix=f"pass [{keywords!r}] (or {keywords.split()!r} for separate words)",
        )
    if a.kind in ("plain", "sampling"):
        return example
    if a.kind != "text" or a.transform is None:
        raise InputError(f"attack {a.name!r} is {a.kind}, not a prompt rewrite")
    out = a.transform(example, _safe_keywords(example, keywords))
    if not isinstance(out, Example):
        raise InputError(
            f"the transform returned {type(out).__name__}, not an Example",
            source=f"attack {a.name!r}",
            fix="return example.with_prompt(new_prompt) from the transform",
        )
    return out.with_prompt(out.prompt, attack=a.name)
