"""Name patterns and constants of architecture detection: the only architecture names outside :mod:`unpact._arch`.

The module-name patterns (attention, MLP, output projections, final norm), the config attribute names
tried for sizes and final logit transforms, the ``ArchSpec`` paths a detection must find
(:data:`PATH_PARTS`), the features it can switch off (:data:`FEATURES`) and the probe batch sizes.
"""

from __future__ import annotations

# ----- name patterns (the only architecture names outside unpact._arch) ------------------------------------------
ATTN_NAMES = ("self_attn", "self_attention", "attention", "attn", "mixer", "multi_head_attention", "attn_layer")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "ff", "block_sparse_moe", "moe", "feedforward", "mlp_block")
MLP_OUT_NAMES = ("fc2", "fc_out", "down_proj", "dense_4h_to_h", "c_proj", "w2", "wo", "out_proj")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "wo", "out", "proj", "output", "o")
FINAL_NORM_NAMES = (
    "norm",
    "ln_f",
    "final_layer_norm",
    "final_layernorm",
    "norm_f",
    "final_norm",
    "ln_out",
    "layernorm",
    "layer_norm",
)
N_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
N_HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads", "attention_heads")
N_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
D_MODEL = ("hidden_size", "n_embd", "d_model", "dim", "model_dim", "embed_dim")
SOFTCAP = ("final_logit_softcapping", "logit_softcapping", "final_logit_soft_cap", "output_logits_soft_cap")
SCALE = ("logit_scale", "logits_scale", "output_logit_scale", "logit_multiplier")
DIVISOR = ("logits_scaling", "logit_scaling", "logits_divisor")

#: ArchSpec paths a :class:`~unpact.models.Subject` resolves; every one must be found.
PATH_PARTS: tuple[str, ...] = ("embed", "blocks", "final_norm", "unembed", "attn", "attn_out_proj", "mlp")

#: Features a detection can switch off, and what each covers.
FEATURES: dict[str, str] = {
    "ig": "integrated gradients (it replaces the token-embedding output with interpolated embeddings)",
    "lens": "the logit lens (unpact.lens)",
    "scoring": "every pass that decodes the final-normed residual: integrated gradients, leave-one-out, "
    "attacks, evaluation (Subject.decode_resid)",
    "attn_bias": "the attn_bias white-box attack (a 4-D additive attention mask)",
    "circuits": "edge attribution patching (unpact.circuits)",
}

SEQ = 6  # tokens per probe row
PAD = 2  # left padding of the second row in the mask checks
