"""Images on Qwen3-VL, Qwen3.5 and Qwen2.5-VL (M-RoPE): a real worker on each tiny model, the
official SDKs.

An image's positions make the text after it trail its token index, into decode: the worker's
greedy text equals mlx-vlm's own `generate` alone, with copy drafts on, in a batch beside
sequences at other offsets, and from the prefix cache past the image as from a cold prefill.
"""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.conftest import tiny_vlm
from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_vision import AUTH, MODEL, an_image, anthropic, clear, oa_image, openai

SYSTEM = "You read images carefully and answer in short sentences."
# What the tiny model's template renders for SYSTEM and a user turn of text, image, text.
PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nWhat is in <|vision_start|><|image_pad|><|vision_end|> this picture?"
    "<|im_end|>\n<|im_start|>assistant\n"
)


def picture(seed: int, size: tuple[int, int]) -> bytes:
    """Noise: a random model's replies then differ from one image to another."""
    from PIL import Image

    noise = np.random.RandomState(seed).rand(size[1], size[0], 3) * 255
    out = io.BytesIO()
    Image.fromarray(noise.astype("uint8")).save(out, "PNG")
    return out.getvalue()


WIDE, TALL, SQUARE = picture(1, (300, 200)), picture(2, (120, 260)), picture(3, (160, 160))


def turn(image: dict) -> list[dict]:
    text = [
        {"type": "text", "text": "What is in "},
        image,
        {"type": "text", "text": " this picture?"},
    ]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


# The MoE variants run the same paths: tests/server/model/test_mrope.py checks them in-process.
@pytest.fixture(scope="module", params=["qwen3_vl", "qwen3_5", "qwen2_5_vl"])
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def qwen_worker(family, tmp_path_factory):
    handle = start_worker(
        tiny_vlm(family),
        *("--cache-dir", str(tmp_path_factory.mktemp("kv")), "--max-output-tokens", "200"),
        *("--speculative", "copy"),  # a greedy random model repeats itself: drafts are taken
        api_key=API_KEY,
    )
    yield handle
    handle.stop()
    if os.environ.get("MLXCTL_SHOW_WORKER_LOG"):
        print(handle.log())


@pytest.fixture(scope="module")
def reference(family, tmp_path_factory):
    """mlx-vlm's own greedy text and prompt length for PROMPT with an image."""
    from mlx_vlm import generate, load

    model, processor = load(str(tiny_vlm(family)))
    folder = tmp_path_factory.mktemp("images")

    def run(data: bytes, max_tokens: int) -> tuple[str, int]:
        path = folder / f"{hash(data)}.png"
        path.write_bytes(data)
        out = generate(
            model, processor, PROMPT, image=[str(path)], max_tokens=max_tokens, temperature=0.0
        )
        return out.text.lstrip(), out.prompt_tokens  # a reply's leading space is not sent

    return run


def greedy(
    worker, image: bytes, max_tokens: int, streaming: threading.Event | None = None
) -> tuple[str, int, int]:
    """(text, prompt tokens, cached tokens) of a greedy OpenAI reply, streamed; `streaming` is
    set on its first text."""
    with openai(worker) as client:
        chunks = client.chat.completions.create(
            model=MODEL,
            messages=turn(oa_image(image)),
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                if streaming is not None:
                    streaming.set()
            usage = chunk.usage or usage
    assert usage is not None and usage.prompt_tokens_details is not None
    return text, usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens or 0


def test_greedy_text_is_mlx_vlms_with_copy_drafts_on(family, qwen_worker, reference):
    clear(qwen_worker)
    for image in (WIDE, TALL):  # grids of other shapes: other deltas
        text, prompt, _ = greedy(qwen_worker, image, 60)
        assert (text, prompt) == reference(image, 60)
    if family == "qwen3_vl":  # its greedy text repeats itself; Qwen3.5's gives drafts no hold
        drafts = status(qwen_worker)["scheduler"]["speculative"]
        assert drafts["accepted"] > 0, drafts  # the drafts ran, and changed nothing


def test_a_follow_up_from_the_cache_equals_a_cold_prefill(qwen_worker):
    clear(qwen_worker)
    messages = turn(an_image(SQUARE))[1:]
    settings = {"model": MODEL, "system": SYSTEM, "extra_body": {"temperature": 0.0}}
    with anthropic(qwen_worker) as client:
        first = client.messages.create(max_tokens=4, messages=messages, **settings)
        messages += [
            {"role": "assistant", "content": first.content[0].text},  # type: ignore[union-attr]
            {"role": "user", "content": "And the colours?"},
        ]
        warm = client.messages.create(max_tokens=40, messages=messages, **settings)
        clear(qwen_worker)
        cold = client.messages.create(max_tokens=40, messages=messages, **settings)
    assert warm.usage.cache_read_input_tokens > 64  # past the image (8x8 merged patches)
    assert cold.usage.cache_read_input_tokens == 0
    assert warm.content == cold.content


IMAGE_TOKENS = 54  # WIDE: 300x200 pixels, 12x18 patches of 16 px, merged 2x2


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_and_responses_send_an_image(qwen_worker, stream):
    body = turn(an_image(WIDE))[1:]
    # Greedy: a sampled reply of a random model may end on its own before its 4 tokens.
    settings = {"model": MODEL, "max_tokens": 4, "extra_body": {"temperature": 0.0}}
    with anthropic(qwen_worker) as client:
        if stream:
            with client.messages.stream(messages=body, **settings) as s:
                reply = s.get_final_message()
        else:
            reply = client.messages.create(messages=body, **settings)
        counted = client.messages.count_tokens(model=MODEL, messages=body).input_tokens
        text_only = [{"role": "user", "content": "What is in  this picture?"}]
        without = client.messages.count_tokens(model=MODEL, messages=text_only).input_tokens
    assert reply.stop_reason == "max_tokens"
    usage = reply.usage
    assert usage.input_tokens + usage.cache_read_input_tokens == counted
    assert counted - without >= IMAGE_TOKENS  # the image's tokens, as its size makes them
    url = oa_image(WIDE)["image_url"]["url"]
    parts = [
        {"type": "input_text", "text": "What is in "},
        {"type": "input_image", "image_url": url},
        {"type": "input_text", "text": " this picture?"},
    ]
    with openai(qwen_worker) as client:
        kwargs = {"model": MODEL, "input": [{"role": "user", "content": parts}], "temperature": 0}
        if stream:
            events = list(client.responses.create(max_output_tokens=4, stream=True, **kwargs))  # type: ignore[call-overload]
            assert events[-1].type == "response.incomplete"
            response = events[-1].response
        else:
            response = client.responses.create(max_output_tokens=4, **kwargs)  # type: ignore[call-overload]
    assert response.status == "incomplete" and response.usage is not None
    assert response.usage.input_tokens > IMAGE_TOKENS


def test_image_requests_decode_in_a_batch_at_their_own_offsets(family, tmp_path, reference):
    # A worker of its own, drafts off: the first reply is long, so the others join its batch.
    handle = start_worker(
        tiny_vlm(family),
        *("--cache-dir", str(tmp_path), "--max-output-tokens", "1500"),
        # Images that prefill at once, a stream each, keep their own deltas too.
        *("--turn-seconds", "0.2", "--speculative", "off", "--prefill-streams", "2"),
        api_key=API_KEY,
    )
    # Images of three sizes: three deltas in one batch.
    jobs = [(SQUARE, 1500), (WIDE, 80), (TALL, 80), (picture(4, (400, 90)), 80)]
    try:
        alone = [greedy(handle, image, n)[:2] for image, n in jobs]
        assert alone[1] == reference(WIDE, 80)
        clear(handle)
        with ThreadPoolExecutor(len(jobs)) as pool:
            # The others start on the first's first text, not on a status poll: a poll can
            # answer late, once most of the first reply is out.
            streaming = threading.Event()
            first = pool.submit(greedy, handle, *jobs[0], streaming)
            assert streaming.wait(60)
            rest = list(pool.map(lambda job: greedy(handle, *job), jobs[1:]))
            together = [first.result()[:2], *(r[:2] for r in rest)]
        assert together == alone
        assert status(handle)["scheduler"]["peak_batch_size"] >= 2
    finally:
        handle.stop()


def status(worker) -> dict:
    return httpx.get(worker.base_url + "/v1/status", headers=AUTH).json()
