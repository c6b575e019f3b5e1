"""The one forward path: teacher-forced answer log-probabilities and decoding with a KV cache.

Every tracer, attack, evaluation and quality score that needs "the model's log-probability of the
gold answer" or "the model's answer" goes through this module:

* :func:`answer_logprobs`: teacher-forced ``log p(y_k | x, y_<k)`` at given positions of a batch, with
  any hooks (integrated gradients replaces the embeddings through it); only the selected positions go
  through the unembedding.
* :func:`prompt_pass`: one forward pass over prompts (left-padded, so every prompt ends in the same
  column) followed by their gold answers (right-padded). It gives, from that single pass, each gold
  answer's token log-probabilities, the next-token logits after each prompt (greedy decoding's first
  token and the gold first token's rank), and the prompts' KV cache for decoding.
* :func:`decode`: greedy or sampled continuation of a :class:`PromptPass`, batched, with the KV cache,
  stopping per row at the end token; sampling draws all samples of a prompt from one prompt cache.

A white-box :class:`Intervention` (key-token embeddings scaled, attention toward key tokens biased)
acts on the prompt pass; the attention bias also holds for every generated token, so cached and
uncached decoding (``decode(..., use_cache=False)``, which re-runs the whole sequence each step)
give the same tokens. None of these functions changes the model's weights, mode or grad flags.
"""

from __future__ import annotations

from unpact.forward.decoding import decode
from unpact.forward.layout import Intervention, Packed, pack
from unpact.forward.passes import PromptPass, answer_logprobs, gather_logprobs, prompt_pass

__all__ = [
    "Intervention",
    "Packed",
    "PromptPass",
    "pack",
    "answer_logprobs",
    "prompt_pass",
    "decode",
    "gather_logprobs",
]
