"""Random-weight models of real shapes for the GPU benches, 4-bit group 64 (mlx-lm quantize).

    python bench/gpu_models.py {moe,dense,dense8,small} TOKENIZER_DIR OUT_DIR [--tiny]

`moe`: the Qwen3-Coder-30B-A3B shape (qwen3_moe, 48 layers, 128 experts, 8 a token).
`dense`: a ~27B dense shape (qwen3, 64 layers, hidden 5120, 40 heads, 8 KV heads).
`dense8`: the Qwen3-8B shape left in bf16 (MLX CUDA's 4-bit matmuls cost nearly k times one
token's for k tokens, its bf16 ones do not: the case where verifying drafts is cheap).
`small`: the Qwen3-1.7B shape (qwen3, 28 layers, hidden 2048), the fast model served beside one.
Weights are drawn on the default device and quantized one layer at a time, so the bf16
transients stay small. The tokenizer comes from TOKENIZER_DIR with a Hermes-style tool template
(mlx-lm infers its json_tools parser); lm_head rows past the tokenizer's vocab are zero, so greedy
decoding never picks them. `--tiny` gives a 2-layer model of the same family to dry-run here.
"""

import json
import os
import shutil
import sys
import time

import mlx.core as mx
from mlx_lm.models import qwen3, qwen3_moe
from mlx_lm.utils import quantize_model, save_config, save_model

TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}{{ messages["
    "0].content }}\n\n{% endif %}# Tools\n<tools>\n{% for tool in tools %}{{ tool | tojso"
    'n }}\n{% endfor %}</tools>\nCall a tool as <tool_call>{"name": ..., "arguments":'
    " ...}</tool_call><|im_end|>\n{%- elif messages[0].role == 'system' %}<|im_start|>sys"
    "tem\n{{ messages[0].content }}<|im_end|>\n{%- endif %}{%- for message in messages %}"
    "{%- if message.role == 'system' %}{%- elif message.role == 'tool' %}<|im_start|>user"
    "\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n{%- elif messa"
    "ge.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n{{ message.co"
    "ntent or '' }}{%- for tc in message.tool_calls %}{%- set tool_call = tc.function if "
    'tc.function else tc %}<tool_call>\n{"name": "{{ tool_call.name }}", "arguments"'
    ": {{ tool_call.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n{%- else"
    " %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}{%- "
    "endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)

COMMON = dict(
    rms_norm_eps=1e-6,
    rope_theta=10000000.0,
    tie_word_embeddings=False,
    max_position_embeddings=65536,
    eos_token_id=2,
    bos_token_id=1,
    vocab_size=151936,
)
SHAPES = {
    "moe": (
        qwen3_moe,
        dict(
            model_type="qwen3_moe",
            hidden_size=2048,
            num_hidden_layers=48,
            intermediate_size=6144,
            num_attention_heads=32,
            num_key_value_heads=4,
            head_dim=128,
            num_experts=128,
            num_experts_per_tok=8,
            moe_intermediate_size=768,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=True,
        ),
    ),
    "dense": (
        qwen3,
        dict(
            model_type="qwen3",
            hidden_size=5120,
            num_hidden_layers=64,
            intermediate_size=21504,
            num_attention_heads=40,
            num_key_value_heads=8,
            head_dim=128,
        ),
    ),
    "dense8": (
        qwen3,
        dict(
            model_type="qwen3",
            hidden_size=4096,
            num_hidden_layers=36,
            intermediate_size=12288,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
        ),
    ),
    "small": (
        qwen3,
        dict(
            model_type="qwen3",
            hidden_size=2048,
            num_hidden_layers=28,
            intermediate_size=6144,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
        ),
    ),
}
UNQUANTIZED = {"dense8"}
TINY = dict(
    hidden_size=256,
    num_hidden_layers=2,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    num_experts=16,
    num_experts_per_tok=4,
    moe_intermediate_size=128,
)


def main() -> None:
    shape, tok_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    family, cfg = SHAPES[shape]
    cfg = {**COMMON, **cfg}
    if "--tiny" in sys.argv:
        cfg.update({k: v for k, v in TINY.items() if k in cfg})
    t0 = time.perf_counter()
    mx.random.seed(0)
    model = family.Model(family.ModelArgs.from_dict(cfg))
    model.set_dtype(mx.bfloat16)
    with open(os.path.join(tok_dir, "tokenizer.json")) as f:
        tok = json.load(f)
    n_tok = max(max(tok["model"]["vocab"].values()), *(a["id"] for a in tok["added_tokens"])) + 1
    w = model.lm_head.weight
    model.lm_head.weight = mx.concatenate(
        [w[:n_tok], mx.zeros((cfg["vocab_size"] - n_tok, w.shape[1]), dtype=w.dtype)]
    )
    if shape in UNQUANTIZED:
        qcfg = cfg
    else:
        model, qcfg = quantize_model(model, cfg, 64, 4)
    mx.eval(model.model.embed_tokens.parameters(), model.lm_head.parameters())
    for layer in model.model.layers:  # one layer at a time: the bf16 draws stay small
        mx.eval(layer.parameters())
        mx.clear_cache()
    mx.eval(model.parameters())
    built = time.perf_counter() - t0
    save_model(out, model)
    save_config(qcfg, os.path.join(out, "config.json"))
    shutil.copy(os.path.join(tok_dir, "tokenizer.json"), out)
    with open(os.path.join(tok_dir, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["chat_template"], tc["model_max_length"] = TEMPLATE, cfg["max_position_embeddings"]
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=1)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(
        f"{shape}: built in {built:.1f}s, saved in {time.perf_counter() - t0 - built:.1f}s, "
        f"{size / 2**30:.2f} GiB on disk",
        flush=True,
    )


if __name__ == "__main__":
    main()
