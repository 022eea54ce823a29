"""M-RoPE (Qwen3-VL, Qwen3.5): positions as mlx-vlm lays them out, greedy text equal to
mlx-vlm's own `generate` on the tiny models, and the delta following a sequence into the batch."""

from __future__ import annotations

import hashlib
import io
import types

import numpy as np
import pytest

from server.model.mrope import PositionedKVCache, positioned, positions, rope_delta
from server.model.vision import ImageSpan
from tests.conftest import tiny_vlm

PROMPT = (
    "<|im_start|>system\nYou read images carefully and answer in short sentences.<|im_end|>\n"
    "<|im_start|>user\nWhat is in {image} this picture?<|im_end|>\n<|im_start|>assistant\n"
)


def picture(seed: int, size: tuple[int, int]) -> bytes:
    from PIL import Image

    noise = np.random.RandomState(seed).rand(size[1], size[0], 3) * 255
    out = io.BytesIO()
    Image.fromarray(noise.astype("uint8")).save(out, "PNG")
    return out.getvalue()


def test_positions_are_mlx_vlms():
    import mlx.core as mx
    from mlx_vlm.utils import load_model

    language = load_model(tiny_vlm("qwen3_vl"), lazy=True).language_model
    config = language.config
    start, image, end = config.vision_start_token_id, config.image_token_id, 7
    grids = [(1, 12, 18), (1, 8, 8)]
    ids = [5] * 9 + [start] + [image] * 54 + [end] + [6] * 4 + [start] + [image] * 16 + [end, 7]
    spans = [ImageSpan(10, 64, "a", None, grids[0]), ImageSpan(70, 86, "b", None, grids[1])]
    want, delta = language.get_rope_index(mx.array([ids]), mx.array(grids))
    got = positions(spans, 2, 0, len(ids))
    assert got.tolist() == np.array(want)[:, 0, :].tolist()
    assert rope_delta(spans, 2) == int(delta.item()) == (9 - 54) + (4 - 16)
    assert positions(spans, 2, 30, 75).tolist() == got[:, 30:75].tolist()  # any chunk


FAMILIES = ["qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "qwen2_5_vl"]


@pytest.fixture(scope="module", params=FAMILIES)
def qwen(request):
    from server.model.loading import load_model

    return request.param, load_model(str(tiny_vlm(request.param)))


def _ours(loaded, data: bytes, *, step: int, place: bool = True) -> tuple[str, list[float]]:
    """Greedy text through our prefill and mlx-lm's decode, and the first step's log-probs."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import make_prompt_cache

    from server.engine.prefill import embedder_for, prefill
    from server.prompt.image_tokens import key_images
    from server.request import ImageInput

    vision = loaded.vision
    image = ImageInput(data, hashlib.sha256(data).hexdigest())
    text = PROMPT.format(image=vision.layout.expansion_for(image.data, image.digest))
    tokens, spans = key_images(loaded.tokenizer.encode(text), [image], vision.layout, pixels=True)
    cache = make_prompt_cache(loaded.model)
    cache = vision.place(cache, spans) if place else positioned(cache, 0)
    rendered = types.SimpleNamespace(tokens=tokens, images=spans)
    embed = embedder_for(loaded, rendered)
    prefill(loaded.model, cache, tokens, 0, len(tokens) - 1, step=step, embed=embed)
    greedy = generate_step(
        mx.array(tokens[-1:]), loaded.model, prompt_cache=cache, sampler=lambda x: x.argmax(-1)
    )
    steps = [(int(t), p) for (t, p), _ in zip(greedy, range(24), strict=False)]
    return loaded.tokenizer.decode([t for t, _ in steps]), steps[0][1].tolist()


def test_greedy_text_is_mlx_vlms(qwen, tmp_path):
    from mlx_vlm import generate, load

    family, qwen = qwen
    data = picture(1, (300, 200))
    (tmp_path / "a.png").write_bytes(data)
    model, processor = load(str(tiny_vlm(family)))
    prompt = PROMPT.format(image="<|vision_start|><|image_pad|><|vision_end|>")
    reference = generate(
        model, processor, prompt, image=[str(tmp_path / "a.png")], max_tokens=24, temperature=0.0
    ).text
    text, first = _ours(qwen, data, step=2048)
    assert text == reference
    assert _ours(qwen, data, step=16)[0] == reference  # chunks that start and end mid-image
    # The delta matters: decoding at the token index instead (no delta) reads other positions.
    shifted, unshifted = np.array(first), np.array(_ours(qwen, data, step=2048, place=False)[1])
    assert np.abs(shifted - unshifted).max() > 1e-3


def test_the_batch_takes_each_sequences_delta():
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache

    from server.model.kv_state import snapshot

    def layer(n: int, delta: int) -> KVCache:
        c = KVCache()
        c.update_and_fetch(mx.zeros((1, 2, n, 4)), mx.zeros((1, 2, n, 4)))
        return positioned([c], delta)[0]

    a, b = layer(10, -30), layer(6, 0)
    assert int(a.offset) == 10 and a.offset + a.offset.delta == -20
    batch = PositionedKVCache.merge([a, b])
    assert batch.offset.tolist() == [-20, 6]
    assert int(batch.extract(0).offset) == 10  # what leaves the batch is its length again
    a.update_and_fetch(mx.zeros((1, 2, 1, 4)), mx.zeros((1, 2, 1, 4)))
    assert int(a.offset) == 11 and a.offset.delta == -30
    (kept,) = snapshot([a], 11)
    assert type(kept) is KVCache  # stored plain: the delta is the prompt's
