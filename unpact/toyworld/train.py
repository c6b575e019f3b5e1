"""Tokenizer training and from-scratch language-model training for the toy world.

* :func:`train_tokenizer`: a byte-level BPE tokenizer trained locally on the world's text, with
  ``<pad> <bos> <eos> <unk>`` special tokens; it prepends ``<bos>`` to every encoded text.
* :func:`build_model`: a small GPT-2 (default) or Llama initialised from a config and a seed.
* :func:`train_lm`: AdamW with linear warm-up and cosine decay on a mixture of question/answer
  pairs (loss on the answer and the end token only) and biographies (loss on every token).
  Deterministic: the same seed, data and thread count give bit-identical weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unpact._procs import num_threads as num_threads
from unpact.data import Example, encode
from unpact.errors import InputError, UnknownNameError
from unpact.prompts import PromptFormat

logger = logging.getLogger(__name__)

__all__ = ["num_threads", "TrainItem", "train_tokenizer", "build_model", "make_items", "train_lm"]


def train_tokenizer(texts: Sequence[str], vocab_size: int, *, prepend_bos: bool = True) -> Any:
    """Train a byte-level BPE ``PreTrainedTokenizerFast`` on ``texts``.

    Args:
        texts: Training text (questions, answers, biographies).
        vocab_size: Target vocabulary size (including the 256 byte tokens and 4 special tokens).
        prepend_bos: Prepend ``<bos>`` when encoding (Llama-style); off gives GPT-2-style encoding.

    Returns:
        The tokenizer; ``bos``/``eos``/``pad``/``unk`` are ids 1/2/0/3.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    if prepend_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_model(
    arch: str, tokenizer: Any, *, n_layer: int, d_model: int, n_head: int, n_ctx: int, seed: int
) -> nn.Module:
    """A freshly initialised causal LM (no dropout, tied embeddings).

    Args:
        arch: ``"gpt2"``, ``"llama"``, or any transformers decoder ``model_type`` whose config takes the
            usual names (``hidden_size``, ``num_hidden_layers``...): the toy world in another family.
        tokenizer: The world's tokenizer (gives the vocabulary and special ids).
        n_layer: Number of blocks.
        d_model: Residual width.
        n_head: Attention heads.
        n_ctx: Maximum context length.
        seed: Torch seed for the initial weights.

    Returns:
        The model, float32, in train mode.

    Raises:
        ValueError: For an unknown ``arch``.
    """
    import transformers as tf

    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cfg: Any
    if arch == "gpt2":
        cfg = tf.GPT2Config(
            n_layer=n_layer,
            n_embd=d_model,
            n_head=n_head,
            n_positions=n_ctx,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    else:  # llama or any other transformers decoder family, from the generic config names
        try:
            cfg = tf.AutoConfig.for_model(
                arch,
                hidden_size=d_model,
                intermediate_size=4 * d_model,
                num_hidden_layers=n_layer,
                num_attention_heads=n_head,
                num_key_value_heads=n_head,
                max_position_embeddings=n_ctx,
                tie_word_embeddings=True,
                **ids,
            )
        except ValueError as exc:
            raise UnknownNameError(
                f"unknown toy-world architecture {arch!r} ({exc})",
                source="arch",
                fix="choose 'gpt2', 'llama' or another transformers model_type (e.g. 'olmo', 'stablelm')",
            ) from None
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.train()
    return model


@dataclass(frozen=True)
class TrainItem:
    """One training sequence.

    Attributes:
        ids: Token ids, ``<bos>`` first and ``<eos>`` last.
        loss_start: First position whose token is predicted with loss (the answer start, or 1).
    """

    ids: tuple[int, ...]
    loss_start: int


def make_items(
    tokenizer: Any, examples: Sequence[Example], bios: Sequence[str] = (), *, fmt: PromptFormat | None = None
) -> list[TrainItem]:
    """Tokenize QA examples in a prompt format (loss on answer + ``<eos>``) and biographies (loss on all tokens)."""
    eos = tokenizer.eos_token_id
    items = []
    for ex in examples:
        enc = encode(tokenizer, ex, fmt=fmt)
        items.append(TrainItem(tuple(enc.input_ids.tolist()) + (eos,), enc.answer_span[0]))
    for text in bios:
        ids = list(tokenizer(text)["input_ids"])
        items.append(TrainItem(tuple(ids) + (eos,), 1))
    return items


def _collate(items: Sequence[TrainItem], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(it.ids) for it in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it.ids)
        ids[i, :n] = torch.tensor(it.ids)
        mask[i, :n] = 1
        labels[i, it.loss_start : n] = ids[i, it.loss_start : n]
    return ids, mask, labels


def train_lm(
    model: nn.Module,
    items: Sequence[TrainItem],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    pad_id: int,
    seed: int,
    warmup: float = 0.05,
    weight_decay: float = 0.01,
    progress: bool = True,
    desc: str = "train",
    position: int | None = None,
) -> list[float]:
    """Train ``model`` in place on ``items`` for ``steps`` AdamW steps.

    Args:
        model: A causal LM (put in train mode; left in eval mode on return).
        items: Training sequences (see :func:`make_items`).
        steps: Optimizer steps.
        batch_size: Sequences per step (epochs are reshuffled with the seed).
        lr: Peak learning rate (linear warm-up over ``warmup * steps``, cosine decay to 10%).
        pad_id: Padding id.
        seed: Shuffling seed.
        warmup: Warm-up fraction.
        weight_decay: AdamW weight decay.
        progress: Show a tqdm bar.
        desc: Bar label.
        position: Line of the bar (models trained side by side each get their own).

    Returns:
        The training loss per step.
    """
    from tqdm.auto import tqdm

    if not items:
        raise InputError("no training items", source="train")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    n_warm = max(1, int(warmup * steps))

    def schedule(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        t = (step - n_warm) / max(1, steps - n_warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    order: list[int] = []
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, position=position)
    for _ in bar:
        if len(order) < batch_size:
            order += torch.randperm(len(items), generator=gen).tolist()
        batch, order = [items[i] for i in order[:batch_size]], order[batch_size:]
        ids, mask, labels = _collate(batch, pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress and len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    model.eval()
    return losses
