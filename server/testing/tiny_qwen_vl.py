"""Tiny random-weight Qwen-VLs (M-RoPE positions) for tests and benchmarks.

Qwen3-VL's image tokens take 3-D (t, h, w) positions, and the text after an image continues from
the largest of them, so a sequence's positions trail its token index into decode. A one-layer
tower (16 px patches merged 2x2, as the real model's) reads an image at up to 512x512 pixels into
at most 256 tokens, their count following the image's size; one deepstack layer feeds the first
text layer. The language side is mlx-lm's `qwen3_vl` (a plain, trimmable KV cache); the tokenizer
and Hermes chat template are tiny_model's, with Qwen's vision tokens added.

Other families: `qwen3_5` is Qwen3.5, natively multimodal, whose text model is hybrid (linear
attention in every other layer, an ArraysCache; partial-dimension M-RoPE in the others) and whose
tower has no deepstack; `qwen3_5_moe` and `qwen3_vl_moe` add a mixture of experts; `qwen2_5_vl`
is Qwen2.5-VL (a flat config, a qwen2 text model, sectioned M-RoPE, 14 px patches).
"""

from __future__ import annotations

import json
from pathlib import Path

from server.testing.staging import staged
from server.testing.tiny_model import CHAT_TEMPLATE as TEMPLATE
from server.testing.tiny_model import tokenizer_config, train_tokenizer

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE, VIDEO = "<|image_pad|>", "<|video_pad|>"
PATCH, MERGE = 16, 2
MAX_PIXELS = 512 * 512  # 256 image tokens at most
ARCHITECTURES = {
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
}
# Qwen3.5's and Qwen3-VL's mixtures of experts (the 35B-A3B's and 30B-A3B's shape, scaled
# down): 4 experts, 2 a token.
_MOE = {
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
}
# Qwen3.5's text side: a full-attention layer every 2nd (the real one: every 4th), rotating a
# quarter of each head as the real one does, with the real model's sections scaled down.
_QWEN3_5_TEXT = {
    "model_type": "qwen3_5_text",
    "full_attention_interval": 2,
    "linear_num_value_heads": 4,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "rope_parameters": {
        "rope_type": "default",
        "mrope_section": [3, 3, 2],
        "mrope_interleaved": True,
        "rope_theta": 10000000,
        "partial_rotary_factor": 0.25,
    },
}
# tiny_model's template, reading content given as a list of parts too (as the real Qwen-VL
# templates do, and mlx_vlm.server sends it): text as it is, an image as its vision tokens.
_PARTS = (
    "{%- macro content(c) %}{%- if c is string %}{{- c }}{%- else %}{%- for p in c %}"
    "{%- if p.type == 'text' %}{{- p.text }}{%- elif p.type in ('image', 'image_url') %}"
    "{{- '" + VISION_START + IMAGE + VISION_END + "' }}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- endmacro %}\n"
)
CHAT_TEMPLATE = _PARTS + TEMPLATE.replace(
    "messages[0].content", "content(messages[0].content)"
).replace("message.content", "content(message.content)")
# Qwen3-VL-8B's own tower: 27 layers of 1152, deepstack after layers 8, 16 and 24.
REAL_TOWER = {"vision_hidden": 1152, "vision_layers": 27, "max_pixels": 1280 * 28 * 28}
# Qwen2.5-VL's: 32 layers of 1280, full attention in every 8th.
REAL_TOWER_2_5 = {"vision_hidden": 1280, "vision_layers": 32, "max_pixels": 1280 * 28 * 28}


def _config(
    vocab: int,
    ids: dict[str, int],
    hidden: int,
    layers: int,
    context: int,
    tower: tuple[int, int],
    family: str,
) -> dict:
    head_dim = 32
    text = {
        "model_type": "qwen3_vl_text",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": head_dim,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "rope_theta": 5000000.0,
        "max_position_embeddings": context,
        "tie_word_embeddings": False,
        # Interleaved t/h/w frequency sections, a quarter of the real model's head.
        "rope_scaling": {
            "rope_type": "default",
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        },
    }
    vision_hidden, vision_layers = tower
    vision = {
        "model_type": "qwen3_vl",
        "depth": vision_layers,
        "hidden_size": vision_hidden,
        "intermediate_size": vision_hidden * 4 if vision_hidden > 32 else 64,
        "num_heads": max(2, vision_hidden // 72),
        "out_hidden_size": hidden,
        "patch_size": PATCH,
        "spatial_merge_size": MERGE,
        "temporal_patch_size": 2,
        "in_channels": 3,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0] if vision_layers < 8 else [8, 16, 24],
    }
    if family == "qwen3_vl_moe":
        text.update(_MOE, model_type="qwen3_vl_moe_text", decoder_sparse_step=1)
        text.update(mlp_only_layers=[], norm_topk_prob=True)
        vision.update(model_type=family)
    if family.startswith("qwen3_5"):
        del text["rope_scaling"], text["rope_theta"]
        text.update(_QWEN3_5_TEXT, head_dim=64, model_type=f"{family}_text")
        text.update(_MOE if family == "qwen3_5_moe" else {})
        vision.update(model_type=family, deepstack_visual_indexes=[])
    if family == "qwen2_5_vl":
        return _qwen2_5_vl(text, vision, ids, vocab)
    return {
        "model_type": family,
        "architectures": [ARCHITECTURES[family]],
        "text_config": text,
        "vision_config": vision,
        "vocab_size": vocab,
        "image_token_id": ids[IMAGE],
        "video_token_id": ids[VIDEO],
        "vision_start_token_id": ids[VISION_START],
        "vision_end_token_id": ids[VISION_END],
        "tie_word_embeddings": False,
        "eos_token_id": [ids["<|im_end|>"]],
    }


def _qwen2_5_vl(text: dict, vision: dict, ids: dict[str, int], vocab: int) -> dict:
    """Qwen2.5-VL's flat config: the text model's fields at the top, sectioned M-RoPE, a tower
    of 14 px patches with windowed attention and no deepstack."""
    text = {k: v for k, v in text.items() if k not in ("head_dim", "model_type")}
    # head_dim 16 (64 / 4 heads): sections of its 8 frequencies, as [16, 24, 24] are of 64.
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 3, 3]}
    del vision["num_position_embeddings"], vision["deepstack_visual_indexes"]
    vision.update(model_type="qwen2_5_vl", patch_size=14, window_size=112)
    full = [7, 15, 23, 31] if vision["depth"] >= 32 else [0]  # the rest attend in windows
    vision.update(fullatt_block_indexes=full, spatial_patch_size=14)
    return {
        **text,
        "model_type": "qwen2_5_vl",
        "architectures": [ARCHITECTURES["qwen2_5_vl"]],
        "vision_config": vision,
        "image_token_id": ids[IMAGE],
        "video_token_id": ids[VIDEO],
        "vision_start_token_id": ids[VISION_START],
        "vision_end_token_id": ids[VISION_END],
        "vocab_size": vocab,
        "eos_token_id": [ids["<|im_end|>"]],
    }


def _processor_files(staging: Path, context: int, max_pixels: int, family: str) -> None:
    patch = 14 if family == "qwen2_5_vl" else PATCH
    image = {
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "processor_class": "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen3VLProcessor",
        "patch_size": patch,
        "temporal_patch_size": 2,
        "merge_size": MERGE,
        "size": {"shortest_edge": 4 * (patch * MERGE) ** 2, "longest_edge": max_pixels},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (staging / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (staging / "processor_config.json").write_text(
        json.dumps({"processor_class": image["processor_class"]}, indent=2)
    )
    tokenizer = tokenizer_config(context, CHAT_TEMPLATE)
    (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2))


def build_tiny_qwen_vl(
    destination: Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    context: int = 32768,
    seed: int = 0,
    vision_hidden: int = 32,
    vision_layers: int = 1,
    max_pixels: int = MAX_PIXELS,
    family: str = "qwen3_vl",
) -> Path:
    """Write the tiny model of `family` (qwen3_vl[_moe], qwen3_5[_moe], qwen2_5_vl) at
    `destination` (kept if already there) and return it."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.utils import update_module_configs

    module = importlib.import_module(f"mlx_vlm.models.{family}")

    destination = Path(destination)
    if (destination / "config.json").exists():
        return destination
    tokenizer = train_tokenizer(extra_tokens=(VISION_START, VISION_END, IMAGE, VIDEO))
    names = (VISION_START, VISION_END, IMAGE, VIDEO, "<|endoftext|>", "<|im_end|>")
    ids = {t: tokenizer.token_to_id(t) for t in names}
    tower = (vision_hidden, vision_layers)
    config = _config(tokenizer.get_vocab_size(), ids, hidden, layers, context, tower, family)
    mx.random.seed(seed)
    params = dict(config)  # Qwen2.5-VL's from_dict adds a text_config to what it is given
    model_config = module.ModelConfig.from_dict(params)
    model_config = update_module_configs(model_config, module, params, ["text", "vision"])
    model = module.Model(model_config)
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)

    with staged(destination) as staging:
        mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save(str(staging / "tokenizer.json"))
        _processor_files(staging, context, max_pixels, family)
    return destination
