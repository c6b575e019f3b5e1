"""Tiny random models of every supported architecture, built offline from configs.

Used by unpact's own tests and handy for users' tests: nothing is downloaded. The tokenizer is a
small byte-level BPE trained in memory on a few sentences, so any text can be encoded.

Example:
    >>> from unpact.testing import tiny_subject
    >>> s = tiny_subject("llama")
    >>> s.n_layers, s.n_heads, s.n_kv_heads
    (2, 4, 2)
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from unpact.models import Subject, load_model

__all__ = ["TINY_ARCHITECTURES", "DETECT_FAMILIES", "tiny_tokenizer", "tiny_config", "tiny_model", "tiny_subject"]

TINY_ARCHITECTURES: tuple[str, ...] = (
    "gpt2",
    "gpt_neox",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi3",
    "opt",
)

_CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Where was Ada Lovelace born? She was born in London in 1815.",
    "Who wrote the book? The author wrote it in a small town near the river.",
    "Focus on the name. Answer with one word: the city, the year, the job.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
]


@functools.lru_cache(maxsize=4)
def tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` (no BOS prepended) with bos/eos/pad/unk, trained in memory."""
    from unpact.toyworld.train import train_tokenizer

    return train_tokenizer(_CORPUS * 4, vocab_size, prepend_bos=False)


# transformers model types with no registered ArchSpec whose tiny random models unpact maps from their structure
# (unpact._arch_detect); tests/test_families.py runs every tracer on each. Any other decoder-only model type may work
# with tiny_config too: these are the ones tested.
DETECT_FAMILIES: tuple[str, ...] = (
    "apertus",
    "arcee",
    "biogpt",
    "bloom",
    "codegen",
    "cohere",
    "cohere2",
    "ctrl",
    "diffllama",
    "ernie4_5",
    "exaone4",
    "falcon",
    "gemma3_text",
    "glm",
    "glm4",
    "gpt_bigcode",
    "gpt_neo",
    "gpt_neox_japanese",
    "gptj",
    "granite",
    "granitemoe",
    "helium",
    "hunyuan_v1_dense",
    "jetmoe",
    "ministral",
    "mixtral",
    "mpt",
    "nemotron",
    "olmo",
    "olmo2",
    "olmo3",
    "olmoe",
    "persimmon",
    "phi",
    "qwen2_moe",
    "qwen3_moe",
    "seed_oss",
    "smollm3",
    "stablelm",
    "starcoder2",
    "vaultgemma",
    "xglm",
)

# What a family needs beyond the shared tiny sizes (None removes a shared key the config refuses).
_FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {
    "falcon": {"head_dim": None},
    "gpt_neo": {"attention_types": [[["global", "local"], 1]], "window_size": 16},
    "gptj": {"rotary_dim": 16},
    "codegen": {"rotary_dim": 16},
    "gpt_bigcode": {"n_inner": 128},
    "xglm": {"ffn_dim": 128},
    "ctrl": {"dff": 128},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
    },
    "qwen3_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2},
    "granitemoe": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "jetmoe": {"num_local_experts": 4, "num_experts_per_tok": 2, "kv_channels": 16},
    # real Granite checkpoints divide the logits and scale the residual writes: exercise both
    "granite": {"logits_scaling": 4.0, "residual_multiplier": 0.5},
    "gemma3_text": {"final_logit_softcapping": 30.0, "sliding_window": 16},
}


def tiny_config(model_type: str, vocab: int | None = None, **overrides: Any) -> Any:
    """A 2-layer, 64-wide (4 heads of 16, 2 kv heads) config of any transformers decoder-only ``model_type``.

    Built with ``AutoConfig.for_model`` from shared sizes (under transformers' usual names, which
    each config maps to its own) plus what the family needs (:data:`DETECT_FAMILIES` are tested).

    Args:
        model_type: A transformers ``model_type`` (``"phi"``, ``"bloom"``, ...).
        vocab: Vocabulary size; default that of :func:`tiny_tokenizer`.
        **overrides: Config values set on top.

    Returns:
        The config, with eager attention.
    """
    from transformers import AutoConfig

    if model_type in TINY_ARCHITECTURES:
        cfg = _config(model_type, vocab or len(tiny_tokenizer()), **overrides)
        cfg._attn_implementation = "eager"
        return cfg
    kw: dict[str, Any] = dict(
        vocab_size=vocab or len(tiny_tokenizer()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    kw.update(_FAMILY_OVERRIDES.get(model_type, {}))
    kw.update(overrides)
    cfg = AutoConfig.for_model(model_type, **{k: v for k, v in kw.items() if v is not None})
    cfg._attn_implementation = "eager"
    return cfg


def _config(arch: str, vocab: int, **over: Any) -> Any:
    import transformers as tf

    common: dict[str, Any] = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    llama_like: dict[str, Any] = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        head_dim=16,
        tie_word_embeddings=False,
    )
    cfg: Any
    if arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **common)
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
            **common,
        )
    elif arch == "opt":
        cfg = tf.OPTConfig(
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
            word_embed_proj_dim=64,
            **common,
        )
    elif arch == "phi3":
        cfg = tf.Phi3Config(**{**llama_like, "head_dim": None}, **common)
        if hasattr(cfg, "head_dim"):
            cfg.head_dim = 16
    else:
        cls = {
            "llama": tf.LlamaConfig,
            "mistral": tf.MistralConfig,
            "qwen2": tf.Qwen2Config,
            "qwen3": tf.Qwen3Config,
            "gemma": tf.GemmaConfig,
            "gemma2": tf.Gemma2Config,
        }.get(arch)
        if cls is None:
            raise ValueError(f"no tiny config for {arch!r}; choose from {TINY_ARCHITECTURES}")
        extra: dict[str, Any] = {}
        if arch == "gemma2":
            extra = dict(final_logit_softcapping=30.0, attn_logit_softcapping=50.0, sliding_window=16)
        cfg = cls(**llama_like, **extra, **common)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(arch: str, *, seed: int = 0, **config_overrides: Any) -> tuple[torch.nn.Module, Any]:
    """Build a random 2-layer, 64-wide causal LM of architecture ``arch`` and the tiny tokenizer.

    Args:
        arch: One of :data:`TINY_ARCHITECTURES` (the registered families, configs as they always were)
            or another transformers ``model_type`` (built by :func:`tiny_config`; :data:`DETECT_FAMILIES`
            are tested).
        seed: Torch seed for the random weights.
        **config_overrides: Set on the config before building (e.g. ``attn_implementation``).

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, float32, on CPU.
    """
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    if arch in TINY_ARCHITECTURES:
        cfg = _config(arch, len(tok), **config_overrides)
        cfg._attn_implementation = "eager"
    else:
        cfg = tiny_config(arch, len(tok), **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # Random init leaves norms at identity and weights tiny; scale up so tokens matter.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.2)
    model.eval()
    return model, tok


def tiny_subject(arch: str, *, seed: int = 0) -> Subject:
    """:func:`tiny_model` wrapped by :func:`unpact.load_model`."""
    model, tok = tiny_model(arch, seed=seed)
    return load_model(model, tok, name=f"tiny-{arch}")
