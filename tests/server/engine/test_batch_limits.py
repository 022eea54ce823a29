"""A token's KV size, read off the model as it will run (real tiny models)."""

from __future__ import annotations

from server.engine.batch_limits import kv_bytes_per_token, store_reserve


def expected(model, itemsize: int) -> int:
    args = model.args
    head_dim = getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads
    return 2 * len(model.layers) * args.num_key_value_heads * head_dim * itemsize


def test_kv_size_follows_the_compute_dtype_not_a_packed_weight(tiny_model_path):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import load

    model, _ = load(str(tiny_model_path))
    assert kv_bytes_per_token(model) == expected(model, 4)  # float32 weights: float32 KV
    model.set_dtype(mx.bfloat16)
    nn.quantize(model, group_size=32, bits=4)  # weights packed into uint32, scales in bf16
    assert any(w.dtype == mx.uint32 for w in model.layers[0].self_attn.q_proj.parameters().values())
    assert kv_bytes_per_token(model) == expected(model, 2)


def test_a_store_reserves_its_largest_sequence_and_the_writers_copy_where_there_is_one():
    assert store_reserve([3, 9, 4], writer_copies=False) == 9
    assert store_reserve([3, 9, 4], writer_copies=True) == 18
    assert store_reserve([], writer_copies=True) == 0


def test_kv_size_of_a_vision_language_model_is_its_language_models():
    from mlx_lm.utils import load

    from tests.conftest import tiny_vlm

    model, _ = load(str(tiny_vlm()))
    # 2 (K, V) x 2 layers x 2 kv heads x head dim 16 x float32 (the saved dtype)
    assert kv_bytes_per_token(model) == 2 * 2 * 2 * 16 * 4
