"""Images on a vision model: a real worker on the tiny Gemma 3 VLM, the official SDKs.

Images reach the model through all three protocols (in user turns and inside tool results); the
prefix cache keys an image's tokens by its content, so a resent screenshot is reused past the
image and a different one at the same place is not; a bad payload is a 400 naming its block.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import tiny_vlm
from tests.fixtures_worker import API_KEY, start_worker

MODEL = "claude-sonnet-4-5"
AUTH = {"authorization": f"Bearer {API_KEY}", "anthropic-version": "2023-06-01"}


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def an_image(data: bytes, media_type: str = "image/png") -> dict:
    encoded = base64.b64encode(data).decode()
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": encoded},
    }


def oa_image(data: bytes) -> dict:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return {"type": "image_url", "image_url": {"url": url}}


RED, BLUE = png((200, 20, 20)), png((20, 20, 200))
# Images of their own for the cache tests: a reply's end state may be stored after the next
# test clears the cache, so no earlier test's prompt may hold these.
GREEN, GREY, YELLOW = png((20, 200, 20)), png((120, 120, 120)), png((220, 220, 20))
CYAN = png((20, 200, 200))


@pytest.fixture(scope="module")
def vlm_worker(tmp_path_factory):
    handle = start_worker(
        tiny_vlm(),
        "--cache-dir",
        str(tmp_path_factory.mktemp("kv")),
        "--max-output-tokens",
        "200",
        # Short turns: a prompt arriving while others decode joins them well before they end.
        "--turn-seconds",
        "0.2",
        # A greedy random model repeats itself, which copy drafts finish in a few steps: the
        # lone first request would end before the others join the batch.
        *("--speculative", "off"),
        api_key=API_KEY,
    )
    yield handle
    handle.stop()
    if os.environ.get("MLXCTL_SHOW_WORKER_LOG"):
        print(handle.log())


def anthropic(worker):
    from anthropic import Anthropic

    return Anthropic(base_url=worker.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def openai(worker):
    from openai import OpenAI

    return OpenAI(base_url=worker.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def clear(worker) -> None:
    r = httpx.delete(worker.base_url + "/v1/cache", headers=AUTH)
    assert r.status_code == 200, r.text


def screenshot_turn(image: dict, text: str = "What is on my screen?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, image]}]


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sends_an_image_and_gets_a_reply(vlm_worker, stream):
    messages = screenshot_turn(an_image(RED))
    with anthropic(vlm_worker) as client:
        if stream:
            with client.messages.stream(model=MODEL, max_tokens=4, messages=messages) as s:
                reply = s.get_final_message()
        else:
            reply = client.messages.create(model=MODEL, max_tokens=4, messages=messages)
        counted = client.messages.count_tokens(model=MODEL, messages=messages)
    assert reply.stop_reason == "max_tokens"
    usage = reply.usage
    prompt = usage.input_tokens + usage.cache_read_input_tokens
    prompt += usage.cache_creation_input_tokens or 0
    assert prompt == counted.input_tokens
    assert counted.input_tokens > 256  # the image's 256 tokens are counted


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sends_an_image_and_gets_a_reply(vlm_worker, stream):
    messages = screenshot_turn(oa_image(BLUE))
    with openai(vlm_worker) as client:
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model=MODEL,
                    max_tokens=4,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            finish = [c.choices[0].finish_reason for c in chunks if c.choices]
            usage = chunks[-1].usage
            assert "length" in finish
        else:
            reply = client.chat.completions.create(model=MODEL, max_tokens=4, messages=messages)
            assert reply.choices[0].finish_reason == "length"
            usage = reply.usage
    assert usage is not None and usage.prompt_tokens > 256


def test_a_follow_up_with_the_same_screenshot_reuses_the_prefix_past_the_image(vlm_worker):
    clear(vlm_worker)
    messages = screenshot_turn(an_image(GREEN))
    with anthropic(vlm_worker) as client:
        first = client.messages.create(model=MODEL, max_tokens=4, messages=messages)
        first_prompt = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
        messages += [
            {"role": "assistant", "content": "A green window."},
            {"role": "user", "content": "And what colour is it now?"},
        ]
        second = client.messages.create(model=MODEL, max_tokens=4, messages=messages)
    assert first.usage.cache_read_input_tokens == 0
    # Everything up to the previous turn's generation prompt, the image included.
    assert second.usage.cache_read_input_tokens >= first_prompt - 1


def test_a_different_image_at_the_same_place_does_not_hit(vlm_worker):
    clear(vlm_worker)
    with anthropic(vlm_worker) as client:
        grey = screenshot_turn(an_image(GREY), "Which window is this?")
        client.messages.create(model=MODEL, max_tokens=4, messages=grey)
        yellow = screenshot_turn(an_image(YELLOW), "Which window is this?")
        reply = client.messages.create(model=MODEL, max_tokens=4, messages=yellow)
        prompt = client.messages.count_tokens(model=MODEL, messages=yellow).input_tokens
    # Only the text before the image is shared.
    assert 0 < reply.usage.cache_read_input_tokens < prompt - 256


def test_an_image_inside_a_tool_result_reaches_the_model(vlm_worker):
    def session(result: list[dict]) -> list[dict]:
        return [
            {"role": "user", "content": "Read shot.png"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": "s.png"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": result}],
            },
        ]

    tools = [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}]
    with_image = session([an_image(RED)])
    with_text = session([])
    with anthropic(vlm_worker) as client:
        reply = client.messages.create(model=MODEL, max_tokens=4, messages=with_image, tools=tools)
        image_tokens = client.messages.count_tokens(
            model=MODEL, messages=with_image, tools=tools
        ).input_tokens
        text_tokens = client.messages.count_tokens(
            model=MODEL, messages=with_text, tools=tools
        ).input_tokens
    assert reply.content is not None
    assert image_tokens - text_tokens >= 256  # the image's tokens are in the prompt


def post(worker, path: str, body: dict) -> httpx.Response:
    return httpx.post(worker.base_url + path, json=body, headers=AUTH, timeout=120)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (os.urandom(10 * 1024 * 1024), "exceeds 5 MB"),
        (RED[: len(RED) // 2], "could not be decoded"),
        (b"this is plain text, not an image at all", "could not be decoded"),
    ],
    ids=["10MB", "truncated", "not-an-image"],
)
def test_a_bad_image_is_a_400_naming_its_block(vlm_worker, data, says):
    body = {"model": MODEL, "max_tokens": 4, "messages": screenshot_turn(an_image(data))}
    r = post(vlm_worker, "/v1/messages", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "messages[0].content[1]" in error["message"] and says in error["message"]
    openai_body = {"model": MODEL, "messages": screenshot_turn(oa_image(data))}
    r = post(vlm_worker, "/v1/chat/completions", openai_body)
    assert r.status_code == 400, r.text
    assert "messages[0].content[1]" in r.json()["error"]["message"]


def test_url_sources_are_refused_clearly(vlm_worker):
    url_image = {"type": "image", "source": {"type": "url", "url": "http://10.0.0.1/a.png"}}
    r = post(
        vlm_worker,
        "/v1/messages",
        {"model": MODEL, "max_tokens": 4, "messages": screenshot_turn(url_image)},
    )
    assert r.status_code == 400
    assert "send the image inline" in r.json()["error"]["message"]
    part = {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}}
    r = post(
        vlm_worker, "/v1/chat/completions", {"model": MODEL, "messages": screenshot_turn(part)}
    )
    assert r.status_code == 400
    assert "only data URLs" in r.json()["error"]["message"]


def test_a_document_on_a_vision_model_is_a_note_that_says_images_are_read(vlm_worker):
    pdf = {  # a PDF by URL: never fetched
        "type": "document",
        "source": {"type": "url", "url": "https://example.invalid/spec.pdf"},
    }
    body = {"model": MODEL, "max_tokens": 4, "messages": screenshot_turn(pdf, "Summarise it.")}
    r = post(vlm_worker, "/v1/messages", body)
    assert r.status_code == 200, r.text
    assert "document dropped (this model reads text and images only)" in r.headers["warning"]


def rs_image(data: bytes) -> dict:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def rs_turn(image: dict, text: str = "What is on my screen?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_text", "text": text}, image]}]


@pytest.mark.parametrize("stream", [False, True])
def test_responses_sends_an_input_image_and_gets_a_reply(vlm_worker, stream):
    with openai(vlm_worker) as client:
        if stream:
            events = list(
                client.responses.create(
                    model=MODEL, input=rs_turn(rs_image(RED)), max_output_tokens=4, stream=True
                )
            )
            assert events[-1].type == "response.incomplete"
            reply = events[-1].response
        else:
            reply = client.responses.create(
                model=MODEL, input=rs_turn(rs_image(RED)), max_output_tokens=4
            )
    assert reply.status == "incomplete" and reply.usage is not None
    assert reply.usage.input_tokens > 256  # the image's 256 tokens are in the prompt


def test_a_responses_follow_up_with_the_same_image_reuses_the_prefix_past_it(vlm_worker):
    clear(vlm_worker)
    first_turn = rs_turn(rs_image(CYAN))
    with openai(vlm_worker) as client:
        first = client.responses.create(
            model=MODEL, input=first_turn, max_output_tokens=4, store=False
        )
        follow_up = [
            *first_turn,
            {"role": "assistant", "content": "A cyan window."},
            {"role": "user", "content": "And what colour is it now?"},
        ]
        second = client.responses.create(
            model=MODEL, input=follow_up, max_output_tokens=4, store=False
        )
    assert first.usage is not None and second.usage is not None
    assert first.usage.input_tokens_details.cached_tokens == 0
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached >= first.usage.input_tokens - 1  # everything up to the new turn


def test_an_input_image_in_a_function_call_output_reaches_the_model(vlm_worker):
    def session(output: list[dict]) -> list[dict]:
        return [
            {"role": "user", "content": "Look at shot.png"},
            {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": output},
        ]

    tools = [{"type": "function", "name": "view_image", "parameters": {"type": "object"}}]
    shown = [{"type": "input_text", "text": "shot.png:"}, rs_image(BLUE)]
    body = {"model": MODEL, "tools": tools}
    with_image = post(vlm_worker, "/v1/responses/input_tokens", {**body, "input": session(shown)})
    without = post(vlm_worker, "/v1/responses/input_tokens", {**body, "input": session(shown[:1])})
    assert with_image.json()["input_tokens"] - without.json()["input_tokens"] >= 256
    with openai(vlm_worker) as client:
        reply = client.responses.create(
            model=MODEL,
            input=session(shown),
            tools=tools,
            max_output_tokens=4,  # type: ignore[arg-type]
        )
    assert reply.usage is not None and reply.usage.input_tokens > 256


@pytest.mark.parametrize(
    ("part", "says"),
    [
        ({"type": "input_image", "file_id": "file-abc"}, "file_id"),
        ({"type": "input_image", "image_url": "https://example.invalid/a.png"}, "only data URLs"),
        (rs_image(RED[: len(RED) // 2]), "could not be decoded"),
    ],
    ids=["file_id", "https", "truncated"],
)
def test_a_responses_image_not_inline_or_broken_is_a_400_naming_the_item(vlm_worker, part, says):
    r = post(vlm_worker, "/v1/responses", {"model": MODEL, "input": rs_turn(part)})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "input"
    assert "input[0].content[1]" in error["message"] and says in error["message"]


def greedy_stream(
    worker, image: bytes, max_tokens: int = 120, streaming: threading.Event | None = None
) -> tuple[str, int]:
    """The greedy streamed reply and its completion tokens; `streaming` is set on its first
    text."""
    with openai(worker) as client:
        chunks = client.chat.completions.create(
            model=MODEL,
            messages=screenshot_turn(oa_image(image)),
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, completion = "", 0
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                if streaming is not None:
                    streaming.set()
            if chunk.usage:
                completion = chunk.usage.completion_tokens
    return text, completion


def test_image_requests_decode_together_as_they_do_one_by_one(tmp_path):
    # A worker of its own: the first reply is long (seconds), so the other three join it in the
    # batch whatever this machine's speed; at 120 tokens it could end before they prefill.
    handle = start_worker(
        tiny_vlm(),
        *("--cache-dir", str(tmp_path), "--max-output-tokens", "2000"),
        *("--turn-seconds", "0.2", "--speculative", "off", "--prefill-streams", "2"),
        api_key=API_KEY,
    )
    lengths = [2000, 120, 120, 120]
    images = [png((40 * i, 200 - 40 * i, 90)) for i in range(4)]
    try:
        alone = [greedy_stream(handle, image, n) for image, n in zip(images, lengths, strict=True)]
        assert alone[0][1] == lengths[0]  # the long one runs to its limit (greedy: it always does)
        assert status(handle)["scheduler"]["peak_batch_size"] == 1
        clear(handle)  # together, each prefills its image again, inside the batch
        with ThreadPoolExecutor(len(images)) as pool:
            # The others start on the first's first text: a status poll can answer late.
            streaming = threading.Event()
            first = pool.submit(greedy_stream, handle, images[0], lengths[0], streaming)
            assert streaming.wait(60)
            rest = list(pool.map(lambda image: greedy_stream(handle, image), images[1:]))
            together = [first.result(), *rest]
        assert together == alone
        assert len({text for text, _ in alone}) > 1  # the images make the replies differ
        scheduler = status(handle)["scheduler"]
        assert scheduler["mode"] == "batched" and scheduler["peak_batch_size"] >= 2
        # Whether the three prefilled side by side depends on this machine's timing: the streams'
        # own test (tests/worker/test_batch.py) checks they do; here only that nothing changes.
    finally:
        handle.stop()


def status(worker) -> dict:
    return httpx.get(worker.base_url + "/v1/status", headers=AUTH).json()


def test_the_disk_tier_keeps_an_image_prompt_across_a_restart(tmp_path):
    messages = screenshot_turn(an_image(BLUE), "Describe this screenshot.")
    args = ("--cache-dir", str(tmp_path), "--max-output-tokens", "8")
    handle = start_worker(tiny_vlm(), *args, api_key=API_KEY)
    try:
        with anthropic(handle) as client:
            client.messages.create(model=MODEL, max_tokens=4, messages=messages)
            prompt = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
    finally:
        handle.stop()  # a graceful stop writes the entry to disk
    handle = start_worker(tiny_vlm(), *args, api_key=API_KEY)
    try:
        follow_up = [*messages, {"role": "assistant", "content": "Blue."}]
        follow_up.append({"role": "user", "content": "Sure?"})
        with anthropic(handle) as client:
            reply = client.messages.create(model=MODEL, max_tokens=4, messages=follow_up)
    finally:
        handle.stop()
    assert reply.usage.cache_read_input_tokens >= prompt - 1


def test_status_says_the_model_reads_images(vlm_worker):
    assert status(vlm_worker)["images"] is True
