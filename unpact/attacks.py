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

Generation is a plain batched greedy / sampling loop without a KV cache on right-padded prompts:
with causal attention no real token ever sees padding, so a batched row gives the same tokens as
the row alone, and position-based interventions stay aligned at every step.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from unpact.data import Example, InputError, encode
from unpact.models import Subject, frozen

logger = logging.getLogger(__name__)

__all__ = [
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

TextTransform = Callable[[Example, Sequence[str]], Example]
AttackKind = Literal["plain", "text", "sampling", "whitebox"]


# ----- keyword location ------------------------------------------------------------------------
def find_keyword_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int, str]]:
    """Character spans of whole-word occurrences of the key words in ``text``.

    Matching is case-sensitive first; a key word with no case-sensitive hit is matched ignoring
    case. Overlapping hits keep the earliest, longest one.

    Args:
        text: The prompt.
        keywords: Words or multi-word phrases.

    Returns:
        Sorted, non-overlapping ``(start, stop, keyword)`` triples.
    """
    hits: list[tuple[int, int, str]] = []
    for kw in dict.fromkeys(k for k in keywords if k and k.strip()):
        pat = r"(?<!\w)" + re.escape(kw.strip()) + r"(?!\w)"
        found = [(m.start(), m.end(), kw) for m in re.finditer(pat, text)]
        if not found:
            found = [(m.start(), m.end(), kw) for m in re.finditer(pat, text, flags=re.IGNORECASE)]
        hits.extend(found)
    hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
    out: list[tuple[int, int, str]] = []
    for h in hits:
        if out and h[0] < out[-1][1]:
            continue
        out.append(h)
    return out


def key_positions(tokenizer: Any, prompt: str, keywords: Sequence[str]) -> list[int]:
    """Token indices (in ``encode``'s prompt ids, BOS included if the tokenizer adds one) of the key words.

    A token is a key position if its character span overlaps a key word's span.

    Raises:
        InputError: If the tokenizer cannot report character offsets (use a fast tokenizer).
    """
    spans = find_keyword_spans(prompt, keywords)
    if not spans:
        return []
    try:
        enc = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as exc:
        raise InputError(
            "white-box attacks need token character offsets; load a fast tokenizer (use_fast=True)"
        ) from exc
    positions = []
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if b <= a:
            continue  # special tokens
        if any(a < e and b > s and prompt[max(a, s):min(b, e)].strip() for s, e, _ in spans):
            positions.append(i)
    return positions


def _replace_keywords(text: str, keywords: Sequence[str], fn: Callable[[str], str]) -> str:
    spans = find_keyword_spans(text, keywords)
    for s, e, _ in reversed(spans):
        text = text[:s] + fn(text[s:e]) + text[e:]
    return text


def _present(example: Example, keywords: Sequence[str]) -> list[str]:
    """Key words in the order they appear in the prompt (as written there)."""
    return [example.prompt[s:e] for s, e, _ in find_keyword_spans(example.prompt, keywords)]


# ----- built-in text transforms ----------------------------------------------------------------
def restate(example: Example, keywords: Sequence[str]) -> Example:
    """``"Focus on: X, Y. <prompt>"``: restate the key words before the question."""
    words = _present(example, keywords)  # only key words found in the prompt
    if not words:
        return example
    return example.with_prompt(f"Focus on: {', '.join(dict.fromkeys(words))}. {example.prompt}")


def repeat(example: Example, keywords: Sequence[str]) -> Example:
    """Repeat every key word in place: ``"... X X ..."``."""
    return example.with_prompt(_replace_keywords(example.prompt, keywords, lambda w: f"{w} {w}"))


def quote(example: Example, keywords: Sequence[str]) -> Example:
    """Put every key word in double quotes."""
    return example.with_prompt(_replace_keywords(example.prompt, keywords, lambda w: f'"{w}"'))


def capitalise(example: Example, keywords: Sequence[str]) -> Example:
    """Write every key word in upper case."""
    return example.with_prompt(_replace_keywords(example.prompt, keywords, str.upper))


def front(example: Example, keywords: Sequence[str]) -> Example:
    """Move the key words to the front: ``"X, Y: <prompt>"`` (the question itself is kept)."""
    words = _present(example, keywords)  # only key words found in the prompt
    if not words:
        return example
    return example.with_prompt(f"{', '.join(dict.fromkeys(words))}: {example.prompt}")


# ----- the registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Attack:
    """A named way to query a model for a forgotten answer, without changing its weights.

    Attributes:
        name: Registry name.
        kind: ``"plain"`` (no attack, the reference), ``"text"``, ``"sampling"`` or ``"whitebox"``.
        transform: Prompt rewrite for ``text`` attacks.
        num_samples: Answers sampled per item (``sampling``); 1 means greedy.
        temperature: Sampling temperature (``sampling``).
        embed_scale: Factor on the key tokens' embeddings (``whitebox``); 1 = off.
        attn_bias: Added to attention logits towards key positions (``whitebox``); 0 = off.
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

    @property
    def uses_keywords(self) -> bool:
        """True if the attack needs key words (all but ``plain`` and ``sampling``)."""
        return self.kind in ("text", "whitebox")

    def config(self) -> dict[str, Any]:
        """JSON-ready description (for provenance and the audit's argument hash)."""
        fn = self.transform
        return {
            "name": self.name, "kind": self.kind, "num_samples": self.num_samples, "temperature": self.temperature,
            "embed_scale": self.embed_scale, "attn_bias": self.attn_bias,
            "transform": None if fn is None else f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}",
        }


def _builtin() -> dict[str, Attack]:
    return {
        "plain": Attack("plain", "plain", description="the unmodified prompt, greedy (reference, not an attack)"),
        "restate": Attack("restate", "text", restate, description='"Focus on: X, Y. <question>"'),
        "repeat": Attack("repeat", "text", repeat, description="each key word repeated in place"),
        "quote": Attack("quote", "text", quote, description="key words in double quotes"),
        "capitalise": Attack("capitalise", "text", capitalise, description="key words in upper case"),
        "front": Attack("front", "text", front, description='"X, Y: <question>"'),
        "sample": Attack("sample", "sampling", num_samples=8, temperature=1.0,
                         description="8 samples at temperature 1; recovered if any matches"),
        "embed_scale": Attack("embed_scale", "whitebox", embed_scale=3.0,
                              description="key tokens' embeddings x3 (hook)"),
        "attn_bias": Attack("attn_bias", "whitebox", attn_bias=2.0,
                            description="+2 on every attention logit towards key positions"),
    }


_REGISTRY: dict[str, Attack] = {}

# The audit's default attack set (each cheap on small models).
DEFAULT_ATTACKS: tuple[str, ...] = (
    "restate", "repeat", "quote", "capitalise", "front", "restate+repeat", "sample", "embed_scale", "attn_bias",
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
        ValueError: If the name is taken (and ``overwrite`` is False) or contains ``+``.
        TypeError: If ``attack`` is neither an Attack nor callable.
    """
    reg = _registry()
    if not isinstance(name, str) or not name or "+" in name:
        raise ValueError(f"attack name {name!r} must be a non-empty string without '+' ('+' combines attacks)")
    if name in reg and not overwrite:
        raise ValueError(f"an attack named {name!r} is already registered; pass overwrite=True to replace it")
    if isinstance(attack, Attack):
        entry = replace(attack, name=name)
    elif callable(attack):
        entry = Attack(name, "text", attack, description=description or (attack.__doc__ or "").strip().split("\n")[0])
    else:
        raise TypeError(f"register_attack needs an Attack or a callable fn(example, keywords), got {type(attack).__name__}")
    reg[name] = entry
    return entry


def list_attacks(kind: AttackKind | None = None) -> list[str]:
    """Names of the registered attacks (optionally of one kind), in registration order."""
    return [n for n, a in _registry().items() if kind is None or a.kind == kind]


def get_attack(name: str | Attack) -> Attack:
    """Look up an attack; ``"a+b"`` composes text attacks left to right (``b`` applied to ``a``'s output).

    Raises:
        ValueError: Unknown name (the message lists the valid ones), or a ``+`` combination of
            non-text attacks.
    """
    if isinstance(name, Attack):
        return name
    reg = _registry()
    parts = [p.strip() for p in str(name).split("+")]
    for p in parts:
        if p not in reg:
            raise ValueError(f"unknown attack {p!r}; registered attacks: {', '.join(reg)} (combine text attacks with '+')")
    if len(parts) == 1:
        return reg[parts[0]]
    steps = [reg[p] for p in parts]
    if any(s.kind != "text" for s in steps):
        raise ValueError(f"only text attacks combine with '+'; {name!r} mixes in {[s.name for s in steps if s.kind != 'text']}")

    def composed(example: Example, keywords: Sequence[str]) -> Example:
        for s in steps:
            example = s.transform(example, keywords)  # type: ignore[misc]
        return example

    composed.__qualname__ = "+".join(parts)
    return Attack("+".join(parts), "text", composed, description=" then ".join(s.description for s in steps))


def _safe_keywords(example: Example, keywords: Sequence[str]) -> list[str]:
    """Drop key words that could leak the gold answer: an attack must never leak it.

    A key word is dropped if it equals or contains the answer, or shares a content word with it
    (case-insensitive, punctuation ignored; function words do not count).
    """
    from unpact.keytokens import _content_words
    from unpact.metrics import normalize_text

    gold = normalize_text(example.answer)
    gold_words = _content_words(example.answer)
    out = []
    for k in keywords:
        nk = normalize_text(k)
        if not nk or (gold and (nk == gold or re.search(r"(?<!\w)" + re.escape(gold) + r"(?!\w)", nk))):
            continue
        if gold_words & _content_words(k):
            continue
        out.append(k)
    return out


def apply_text_attack(attack: str | Attack, example: Example, keywords: Sequence[str]) -> Example:
    """The attacked example for a text (or plain) attack; key words that could leak the answer are never used.

    Raises:
        ValueError: For sampling / white-box attacks (they do not rewrite the prompt).
    """
    a = get_attack(attack)
    if a.kind in ("plain", "sampling"):
        return example
    if a.kind != "text" or a.transform is None:
        raise ValueError(f"attack {a.name!r} is {a.kind}, not a prompt rewrite")
    out = a.transform(example, _safe_keywords(example, keywords))
    if not isinstance(out, Example):
        raise TypeError(f"text attack {a.name!r} returned {type(out).__name__}; it must return an Example")
    return out.with_prompt(out.prompt, attack=a.name)


# ----- running an attack -----------------------------------------------------------------------
@dataclass(frozen=True)
class AttackOutput:
    """What one attack produced on one example.

    Attributes:
        example: The example as the model saw it (the rewritten prompt for text attacks).
        keywords: The key words used (after the answer-leak guard).
        samples: Decoded continuations (one for greedy, ``num_samples`` for sampling).
        first_token_top1: The gold first answer token is the argmax after the prompt.
        answer_logprob: Teacher-forced mean log-probability of the gold answer tokens.
        n_key_positions: Number of prompt tokens the white-box intervention touched.
    """

    example: Example
    keywords: tuple[str, ...]
    samples: tuple[str, ...]
    first_token_top1: bool
    answer_logprob: float
    n_key_positions: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


def _attn_mask(lengths: Sequence[int], width: int, keypos: Sequence[Sequence[int]], bias: float,
               dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(batch, 1, width, width)`` additive mask: causal (-inf above the diagonal) plus ``bias`` on key columns."""
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    base = torch.zeros(width, width, dtype=dtype, device=device).masked_fill(~causal, torch.finfo(dtype).min)
    mask = base.expand(len(lengths), 1, width, width).clone()
    for i, pos in enumerate(keypos):
        for p in pos:
            # every later query position attends a bit more to key position p (not p to itself twice)
            mask[i, 0, p + 1 :, p] += bias
    return mask


def _forward(subject: Subject, ids: torch.Tensor, lengths: Sequence[int], keypos: Sequence[Sequence[int]],
             attack: Attack) -> torch.Tensor:
    """Logits ``(batch, seq, vocab)`` under the attack's white-box intervention (if any)."""
    from unpact.hooks import hooked

    hooks: dict[str, Any] = {}
    if attack.kind == "whitebox" and attack.embed_scale != 1.0:
        scale = float(attack.embed_scale)
        rows = [i for i, p in enumerate(keypos) for _ in p]
        cols = [c for p in keypos for c in p]

        def scale_embed(t: torch.Tensor, *, hook: Any) -> torch.Tensor:
            t = t.clone()
            t[rows, cols] = t[rows, cols] * scale
            return t

        hooks["embed"] = scale_embed
    # Right-padded rows: padding sits after every real token, so causal attention never sees it;
    # the 2-D mask states this to the model (and silences transformers' padding warning).
    mask2d = (torch.arange(ids.shape[1])[None, :] < torch.tensor(list(lengths))[:, None]).long()
    kwargs: dict[str, Any] = {"attention_mask": mask2d.to(subject.device)}
    if attack.kind == "whitebox" and attack.attn_bias != 0.0:
        if subject.spec.model_type == "opt":
            raise ValueError("attn_bias needs a model that accepts a 4-D additive attention mask; OPT does not")
        kwargs["attention_mask"] = _attn_mask(lengths, ids.shape[1], keypos, float(attack.attn_bias),
                                              subject.dtype, subject.device)
    with hooked(subject, hooks):
        return subject.model(input_ids=ids.to(subject.device), use_cache=False, **kwargs).logits


def generate_answers(
    subject: Subject,
    examples: Sequence[Example],
    attack: str | Attack = "plain",
    keywords: Sequence[Sequence[str]] | None = None,
    *,
    max_new_tokens: int = 8,
    batch_size: int = 32,
    seed: int = 0,
) -> list[AttackOutput]:
    """Run one attack on examples: decode answers and score the gold answer under the intervention.

    Alias of :func:`run_attack` (kept for readability where no attack is meant: ``attack="plain"``).
    """
    return run_attack(subject, examples, attack, keywords, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, seed=seed)


def run_attack(
    subject: Subject,
    examples: Sequence[Example],
    attack: str | Attack,
    keywords: Sequence[Sequence[str]] | None = None,
    *,
    max_new_tokens: int = 8,
    batch_size: int = 32,
    seed: int = 0,
) -> list[AttackOutput]:
    """Run one attack on examples, inference only.

    Args:
        subject: The model (weights, mode and flags are left as they are; no hook remains).
        examples: The items (their prompt and gold answer).
        attack: A registered name, a ``"a+b"`` text combination or an :class:`Attack`.
        keywords: Per example, the key words to emphasise (default: each ``example.keywords``).
        max_new_tokens: Tokens decoded per answer.
        batch_size: Examples per forward pass.
        seed: Seed of the sampling generator (sampling attacks; greedy otherwise).

    Returns:
        One :class:`AttackOutput` per example, in order.

    Raises:
        ValueError: For an unknown attack or a keyword list of the wrong length.
    """
    a = get_attack(attack)
    if keywords is None:
        keywords = [e.keywords for e in examples]
    if len(keywords) != len(examples):
        raise ValueError(f"got {len(keywords)} keyword lists for {len(examples)} examples; give one per example")
    if subject.tokenizer is None:
        raise InputError("the subject has no tokenizer; load it with load_model(path, tokenizer)")
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    outs: list[AttackOutput] = []
    with frozen(subject.model), torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            kws = [_safe_keywords(e, k) for e, k in zip(chunk, keywords[start : start + batch_size])]
            outs.extend(_run_chunk(subject, chunk, kws, a, max_new_tokens, gen))
    return outs


def _run_chunk(subject: Subject, chunk: Sequence[Example], kws: Sequence[list[str]], a: Attack,
               max_new_tokens: int, gen: torch.Generator) -> list[AttackOutput]:
    tok = subject.tokenizer
    attacked = [apply_text_attack(a, e, k) if a.kind == "text" else e for e, k in zip(chunk, kws)]
    encs = [encode(tok, e, max_length=subject.n_ctx) for e in attacked]
    keypos = [key_positions(tok, e.prompt, k) if a.kind == "whitebox" else [] for e, k in zip(attacked, kws)]
    # 1) teacher-forced gold answer: first-token top-1 and mean log-prob
    lens = [len(e.input_ids) for e in encs]
    width = max(lens)
    ids = torch.full((len(encs), width), 0, dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, : lens[i]] = e.input_ids
    logp = torch.log_softmax(_forward(subject, ids, lens, keypos, a).float(), dim=-1).cpu()
    top1, lp = [], []
    for i, e in enumerate(encs):
        s, t = e.answer_span
        gold = e.input_ids[s:t]
        pred = logp[i, s - 1 : t - 1]
        top1.append(bool(pred[0].argmax().item() == gold[0].item()))
        lp.append(float(pred.gather(1, gold[:, None]).mean().item()))
    # 2) decoding from the prompt
    n_samp = a.num_samples if a.kind == "sampling" else 1
    sample = a.kind == "sampling"
    prompts = [e.prompt_ids for e in encs for _ in range(n_samp)]
    kp = [p for p in keypos for _ in range(n_samp)]
    texts = _decode(subject, prompts, kp, a, max_new_tokens, sample, gen)
    outs = []
    for i, e in enumerate(attacked):
        outs.append(AttackOutput(
            example=e, keywords=tuple(kws[i]), samples=tuple(texts[i * n_samp : (i + 1) * n_samp]),
            first_token_top1=top1[i], answer_logprob=lp[i], n_key_positions=len(keypos[i]),
        ))
    return outs


def _decode(subject: Subject, prompts: Sequence[torch.Tensor], keypos: Sequence[Sequence[int]], a: Attack,
            max_new_tokens: int, sample: bool, gen: torch.Generator) -> list[str]:
    tok = subject.tokenizer
    eos = getattr(tok, "eos_token_id", None)
    lens = [len(p) for p in prompts]
    n = len(prompts)
    width = max(lens) + max_new_tokens
    fill = 0  # right padding under a causal mask: no real token ever attends to it
    ids = torch.full((n, width), fill, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : lens[i]] = p
    cur = list(lens)
    done = [False] * n
    new: list[list[int]] = [[] for _ in range(n)]
    for _ in range(max_new_tokens):
        w = max(cur)
        logits = _forward(subject, ids[:, :w], cur, keypos, a).float().cpu()
        last = logits[torch.arange(n), torch.tensor(cur) - 1]
        if sample:
            probs = torch.softmax(last / max(a.temperature, 1e-6), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
        else:
            nxt = last.argmax(-1)
        for i in range(n):
            if done[i]:
                continue
            t = int(nxt[i])
            if eos is not None and t == eos:
                done[i] = True
                continue
            ids[i, cur[i]] = t
            cur[i] += 1
            new[i].append(t)
        if all(done):
            break
    return [tok.decode(t, skip_special_tokens=True) for t in new]
