"""Convert a llama-architecture GGUF file into an MLX model directory mlx-lm can load.

`mx.load` reads GGUF natively: Q4_0/Q4_1/Q8_0 tensors arrive as MLX affine-quantized triples
(weight, scales, biases; group size 32) and F16/F32 tensors as they are, so the conversion is a
renaming, llama.cpp's q/k row permutation undone, and a tokenizer rebuilt from the metadata.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from mlxctl.errors import UnsupportedModelError

GROUP_SIZE = 32
# GGUF `general.file_type` values whose tensors mx.load hands over without loss.
SUPPORTED_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0"}

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Pre-tokenizer regimes of llama.cpp's byte-level BPE vocabularies that we can express exactly.
_DIGIT_SPLITTING_PRE = {"smollm", "starcoder", "refact"}
_PLAIN_BYTE_LEVEL_PRE = {"gpt2", "default", "smollm", "starcoder", "refact"}


def _scalar(value: Any) -> Any:
    """GGUF metadata numbers come back as 0-d MLX arrays; turn them into Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _mlx_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.{suffix}"
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    raise UnsupportedModelError(f"unsupported tensor {gguf_name!r} in a llama GGUF")


def _unpermute_rows(array, n_heads: int):
    """Invert llama.cpp's rotary row interleaving on a q/k projection (rows are output dims)."""
    rows, rest = array.shape[0], array.shape[1:]
    return (
        array.reshape(n_heads, rows // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(array.shape)
    )


def read_gguf(path: Path) -> tuple[dict, dict]:
    import mlx.core as mx

    try:
        # mlx's stub gives every mode one union; with metadata it is (weights, metadata).
        loaded = cast("tuple[dict[str, mx.array], dict]", mx.load(str(path), return_metadata=True))
    except (ValueError, RuntimeError) as exc:
        raise UnsupportedModelError(f"cannot read {path.name}: {exc}") from exc
    weights, metadata = loaded
    return weights, {key: _scalar(value) for key, value in metadata.items()}


def build_config(meta: dict, weights: dict, quantization: dict | None) -> dict:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise UnsupportedModelError(
            f"unsupported architecture {arch!r}: only 'llama' GGUF files can be imported"
        )
    hidden = int(meta["llama.embedding_length"])
    heads = int(meta["llama.attention.head_count"])
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(meta["llama.block_count"]),
        "intermediate_size": int(meta["llama.feed_forward_length"]),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "head_dim": int(meta.get("llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "vocab_size": int(meta.get("llama.vocab_size", len(meta["tokenizer.ggml.tokens"]))),
        "tie_word_embeddings": "output.weight" not in weights,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }
    if quantization:
        config["quantization"] = quantization
        config["quantization_config"] = quantization
    return config


def convert_weights(weights: dict, meta: dict) -> tuple[dict, dict | None, str]:
    """Rename tensors to mlx-lm's llama names, undo the q/k permutation, describe quantization.

    Returns (weights, quantization config or None, a short label such as "Q4_1").
    """
    heads = int(meta["llama.attention.head_count"])
    kv_heads = int(meta.get("llama.attention.head_count_kv", heads))
    file_type = int(meta.get("general.file_type", 0))
    if file_type not in SUPPORTED_FILE_TYPES:
        raise UnsupportedModelError(
            f"unsupported GGUF tensor type (general.file_type={file_type}); "
            f"supported: {', '.join(SUPPORTED_FILE_TYPES.values())}"
        )
    out: dict = {}
    bits_by_module: dict[str, int] = {}
    for name, array in weights.items():
        mlx_name = _mlx_name(name)
        if ".attn_q." in name:
            array = _unpermute_rows(array, heads)
        elif ".attn_k." in name:
            array = _unpermute_rows(array, kv_heads)
        out[mlx_name] = array
        if name.endswith(".scales"):
            module = mlx_name.rsplit(".", 1)[0]
            packed = weights[name[: -len("scales")] + "weight"]
            # A uint32 holds 32/bits values: packed columns * 32 / bits == scales columns * group.
            bits_by_module[module] = packed.shape[1] * 32 // (array.shape[1] * GROUP_SIZE)
    if not bits_by_module:
        return out, None, SUPPORTED_FILE_TYPES[file_type]
    common_bits = max(set(bits_by_module.values()), key=list(bits_by_module.values()).count)
    quantization: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": common_bits}
    for module, bits in bits_by_module.items():
        if bits != common_bits:
            quantization[module] = {"group_size": GROUP_SIZE, "bits": bits}
    return out, quantization, SUPPORTED_FILE_TYPES[file_type]


def build_tokenizer(meta: dict) -> tuple[dict, dict]:
    """A Hugging Face `tokenizer.json` and `tokenizer_config.json` from `tokenizer.ggml.*`."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedModelError(
            f"unsupported tokenizer {kind!r}: "
            "only byte-level BPE ('gpt2') vocabularies can be imported"
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types = meta.get("tokenizer.ggml.token_type")
    types = list(types) if types is not None else [1] * len(tokens)
    merges = list(meta.get("tokenizer.ggml.merges", []))
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in _PLAIN_BYTE_LEVEL_PRE:
        raise UnsupportedModelError(
            f"unsupported pre-tokenizer {pre!r}; "
            f"supported: {', '.join(sorted(_PLAIN_BYTE_LEVEL_PRE))}"
        )
    byte_level = {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    pre_tokenizer: dict = byte_level
    if pre in _DIGIT_SPLITTING_PRE:
        pre_tokenizer = {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level],
        }
    # GGUF token type 3 is "control" (special), 4 "user defined": both are added tokens.
    added = [
        {
            "id": i,
            "content": tokens[i],
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": types[i] == 3,
        }
        for i in range(len(tokens))
        if types[i] in (3, 4)
    ]
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": False,
            "use_regex": True,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {token: i for i, token in enumerate(tokens)},
            "merges": merges,
        },
    }

    def token(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(index)] if index is not None and int(index) < len(tokens) else None

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get("llama.context_length", 2048)),
        "additional_special_tokens": [t["content"] for t in added if t["special"]],
    }
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return tokenizer_json, config


def import_gguf(gguf_path: Path, destination: Path) -> dict:
    """Convert `gguf_path` into the model directory `destination`, atomically.

    The directory is assembled beside `destination` and renamed into place only when complete,
    so an error or an interrupt never leaves a half-written model behind. Returns the config.
    """
    import mlx.core as mx

    if destination.exists():
        raise FileExistsError(destination)
    weights, meta = read_gguf(gguf_path)
    converted, quantization, label = convert_weights(weights, meta)
    config = build_config(meta, weights, quantization)
    tokenizer_json, tokenizer_config = build_tokenizer(meta)
    config["mlxctl"] = {"source": gguf_path.name, "quantization": label}

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        mx.save_safetensors(
            str(staging / "model.safetensors"), converted, metadata={"format": "mlx"}
        )
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False))
        (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return config
