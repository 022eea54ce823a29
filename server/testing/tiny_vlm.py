"""A tiny random-weight vision-language model (Gemma 3 architecture) for tests and benchmarks.

Gemma 3 over Qwen3-VL: its image tokens take plain RoPE positions, so a prompt with images
decodes in the batch like any other; Qwen3-VL's M-RoPE positions would follow the sequence
into decode. A SigLIP tower of one layer reads 224x224 images into 256 image tokens, as the
real model does; the language side is mlx-lm's `gemma3` with every layer global (a plain,
trimmable KV cache). The tokenizer and Hermes chat template are tiny_model's (tools work),
with Gemma 3's image tokens added. `python -m server.testing.tiny_vlm OUT_DIR [--context N]`;
`--family qwen3_vl` (`qwen3_5`, `qwen3_5_moe`, `qwen2_5_vl`) builds server.testing.tiny_qwen_vl's.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path

from server.testing import tiny_qwen_vl
from server.testing.staging import staged
from server.testing.tiny_model import CHAT_TEMPLATE, tokenizer_config, train_tokenizer

BOI, EOI, IMAGE = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
IMAGE_SIZE, PATCH, TOKENS_PER_IMAGE = 224, 14, 256
# Gemma 3's own tower (SigLIP So400m): 896x896 images, 4096 patches pooled into 256 tokens.
REAL_TOWER = {"image_size": 896, "vision_hidden": 1152, "vision_layers": 27}


def _config(
    vocab: int,
    ids: dict[str, int],
    hidden: int,
    layers: int,
    context: int,
    tower: tuple[int, int, int],
) -> dict:
    text = {
        "model_type": "gemma3_text",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": hidden * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": hidden // 4,
        "query_pre_attn_scalar": hidden // 4,
        "vocab_size": vocab,
        "sliding_window": context,
        "sliding_window_pattern": 1,  # every layer global: a plain KV cache
        "max_position_embeddings": context,
        "mm_tokens_per_image": TOKENS_PER_IMAGE,
        "rope_scaling": None,
    }
    image_size, vision_hidden, vision_layers = tower
    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": vision_hidden,
        "num_hidden_layers": vision_layers,
        "intermediate_size": vision_hidden * 4 if vision_hidden > 32 else 64,
        "num_attention_heads": max(2, vision_hidden // 72),
        "patch_size": PATCH,
        "image_size": image_size,
    }
    return {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": text,
        "vision_config": vision,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "image_token_index": ids[IMAGE],
        "boi_token_index": ids[BOI],
        "eoi_token_index": ids[EOI],
        "mm_tokens_per_image": TOKENS_PER_IMAGE,
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"]],
    }


def _processor_files(staging: Path, context: int, image_size: int) -> None:
    image = {
        "image_processor_type": "Gemma3ImageProcessor",
        "processor_class": "Gemma3Processor",
        "size": {"height": image_size, "width": image_size},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "do_pan_and_scan": False,
        "resample": 2,
    }
    (staging / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    processor = {"processor_class": "Gemma3Processor", "image_seq_length": TOKENS_PER_IMAGE}
    (staging / "processor_config.json").write_text(json.dumps(processor, indent=2))
    images = {"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE}
    tokenizer = tokenizer_config(context, CHAT_TEMPLATE, extra_special_tokens=images)
    (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2))


def build_tiny_vlm(
    destination: Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    context: int = 32768,
    seed: int = 0,
    image_size: int = IMAGE_SIZE,
    vision_hidden: int = 32,
    vision_layers: int = 1,
) -> Path:
    """Write the tiny VLM at `destination` (kept if already there) and return it. The tower's
    size is a choice: REAL_TOWER's numbers give Gemma 3's (for a GPU measurement)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models import gemma3
    from mlx_vlm.utils import update_module_configs

    destination = Path(destination)
    if (destination / "config.json").exists():
        return destination
    tokenizer = train_tokenizer(extra_tokens=(BOI, EOI, IMAGE))
    ids = {t: tokenizer.token_to_id(t) for t in (BOI, EOI, IMAGE, "<|endoftext|>", "<|im_end|>")}
    tower = (image_size, vision_hidden, vision_layers)
    config = _config(tokenizer.get_vocab_size(), ids, hidden, layers, context, tower)
    mx.random.seed(seed)
    model_config = gemma3.ModelConfig.from_dict(config)
    model = gemma3.Model(update_module_configs(model_config, gemma3, config, ["text", "vision"]))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)

    with staged(destination) as staging:
        mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save(str(staging / "tokenizer.json"))
        _processor_files(staging, context, image_size)
    return destination


BUILDERS: dict[str, Callable[..., Path]] = {
    "gemma3": build_tiny_vlm,
    "qwen3_vl": tiny_qwen_vl.build_tiny_qwen_vl,
    "qwen3_5": functools.partial(tiny_qwen_vl.build_tiny_qwen_vl, family="qwen3_5"),
    "qwen3_5_moe": functools.partial(tiny_qwen_vl.build_tiny_qwen_vl, family="qwen3_5_moe"),
    "qwen2_5_vl": functools.partial(tiny_qwen_vl.build_tiny_qwen_vl, family="qwen2_5_vl"),
    "qwen3_vl_moe": functools.partial(tiny_qwen_vl.build_tiny_qwen_vl, family="qwen3_vl_moe"),
}
REAL_TOWERS = {
    "gemma3": REAL_TOWER,
    "qwen3_vl": tiny_qwen_vl.REAL_TOWER,
    "qwen3_5": tiny_qwen_vl.REAL_TOWER,
    "qwen3_5_moe": tiny_qwen_vl.REAL_TOWER,
    "qwen2_5_vl": tiny_qwen_vl.REAL_TOWER_2_5,
    "qwen3_vl_moe": tiny_qwen_vl.REAL_TOWER,
}


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m server.testing.tiny_vlm")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--context", type=int, default=32768, help="context window in tokens")
    parser.add_argument(
        "--family", choices=sorted(BUILDERS), default="gemma3", help="the architecture"
    )
    parser.add_argument(
        "--real-tower",
        action="store_true",
        help="the real model's tower size (Gemma 3: SigLIP So400m, 896 px; Qwen3-VL-8B's)",
    )
    args = parser.parse_args(argv)
    tower = REAL_TOWERS[args.family] if args.real_tower else {}
    print(BUILDERS[args.family](args.out_dir, context=args.context, **tower))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
