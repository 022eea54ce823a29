"""Token masks on the MLX side: llguidance's bitmask (one bit per token) applied to logits."""

from __future__ import annotations

import numpy as np


def unpack(words: np.ndarray, vocab: int) -> np.ndarray:
    """The bitmask (int32 words, bit i of word w = token 32w+i) as `vocab` booleans; each row
    of a (rows, words) mask as a row of booleans."""
    rows = words.reshape(-1, words.shape[-1])
    bits = np.unpackbits(rows.view(np.uint8), axis=-1, bitorder="little")[:, :vocab]
    if bits.shape[-1] < vocab:  # the model's embedding may be padded past the tokenizer's vocab
        bits = np.pad(bits, ((0, 0), (0, vocab - bits.shape[-1])))
    return bits.view(np.bool_)


def apply(logits, words: np.ndarray, only_rows: np.ndarray | None = None):
    """`logits` (rows, V) with every token the mask forbids at -inf: one mask row per logits
    row, or one for all; `only_rows` (booleans): the rows masked, the others left whole."""
    import mlx.core as mx

    allowed = unpack(words, logits.shape[-1])
    if only_rows is not None:
        allowed[~only_rows] = True  # (a padded vocabulary's tail stays allowed there too)
    return mx.where(mx.array(allowed), logits, mx.array(-mx.inf, dtype=logits.dtype))


def only(words: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A mask allowing just `ids` (int array), in the same layout as `words`."""
    out = np.zeros_like(words).reshape(-1).view(np.uint32)
    np.bitwise_or.at(out, ids >> 5, (np.uint32(1) << (ids & 31).astype(np.uint32)))
    return out.view(np.int32).reshape(words.shape)


def allowed_among(words: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Which of `ids` the mask allows."""
    flat = words.reshape(-1).view(np.uint32)
    inside = ids[(ids >> 5) < flat.size]
    return inside[(flat[inside >> 5] >> (inside & 31).astype(np.uint32)) & 1 == 1]


def likeliest(logits, words: np.ndarray, k: int) -> np.ndarray:
    """The `k` tokens the mask allows with the highest logits, likeliest first."""
    import mlx.core as mx

    masked = apply(logits, words).reshape(-1)
    k = min(k, masked.shape[0])
    top = mx.argpartition(-masked, k - 1)[:k]
    order = mx.argsort(-masked[top])
    picked = np.array(top[order].tolist(), dtype=np.int64)
    return allowed_among(words, picked)
