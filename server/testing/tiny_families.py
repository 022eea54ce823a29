"""The tiny models' networks by family: each one's `config.json`, at a tiny size.

qwen2 (the default), and the kinds whose cache cannot be trimmed: the hybrids qwen3_next and
qwen3_5 (linear attention beside full), and gemma3_text (a sliding window).
"""

from __future__ import annotations

ROPE_3_5 = {
    "type": "default",
    "rope_theta": 1e6,
    "partial_rotary_factor": 0.25,
    "mrope_section": [1, 1, 0],
}
QWEN3_NEXT = {
    "model_type": "qwen3_next",
    "architectures": ["Qwen3NextForCausalLM"],
    "linear_num_value_heads": 2,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "num_experts": 0,
    "num_experts_per_tok": 1,
    "decoder_sparse_step": 1,
    "shared_expert_intermediate_size": 0,
    "mlp_only_layers": [],
    "moe_intermediate_size": 0,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "partial_rotary_factor": 0.25,
    "head_dim": 16,
    "full_attention_interval": 2,
    "tie_word_embeddings": True,
}
FAMILIES = ("qwen2", "qwen3_next", "qwen3_5", "gemma3_text")


def model_config(
    vocab_size: int, layers: int, hidden: int, context: int, eos_id: int, family: str, window: int
) -> dict:
    """`config.json` of a tiny `family` network (one of FAMILIES)."""
    heads = max(1, hidden // 16)
    if family == "qwen3_next":
        # Hybrid: linear-attention layers (ArraysCache) with a full-attention one every 2nd.
        return {
            **QWEN3_NEXT,
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "intermediate_size": hidden * 2,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": context,
            "vocab_size": vocab_size,
            "eos_token_id": eos_id,
        }
    if family == "qwen3_5":
        # Qwen3.5's hybrid inside its multimodal wrapper (text only here): a text_config.
        text = {
            **model_config(vocab_size, layers, hidden, context, eos_id, "qwen3_next", window),
            "model_type": "qwen3_5_text",
            "rope_parameters": ROPE_3_5,
        }
        return {
            "model_type": "qwen3_5",
            "architectures": ["Qwen3_5ForConditionalGeneration"],
            "text_config": text,
            "tie_word_embeddings": True,
            "max_position_embeddings": context,
            "eos_token_id": eos_id,
        }
    if family == "gemma3_text":
        # Sliding window (RotatingKVCache of `window` tokens) with a global layer every 2nd.
        return {
            "model_type": "gemma3_text",
            "architectures": ["Gemma3ForCausalLM"],
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "intermediate_size": hidden * 2,
            "num_attention_heads": heads,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": window,
            "sliding_window_pattern": 2,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": context,
            "vocab_size": vocab_size,
            "eos_token_id": eos_id,
        }
    if family != "qwen2":
        raise ValueError(f"unknown tiny model family {family!r}")
    return {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": context,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
    }
