"""Images sent to a text-only model: a session with a screenshot in it keeps working.

An image in an earlier turn becomes the placeholder a tool result's image gets; an image in the
newest turn is dropped too, and the reply says so (a `warning` header, a log line) instead of
failing the turn. Both protocols, through their official SDKs.
"""

from __future__ import annotations

import pytest

from tests.fixtures_worker import API_KEY

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
AN_IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
OA_IMAGE = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


def anthropic(worker):
    from anthropic import Anthropic

    return Anthropic(base_url=worker.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def openai(worker):
    from openai import OpenAI

    return OpenAI(base_url=worker.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def anthropic_session(image: dict | str, newest: list | str = "And now?") -> list[dict]:
    """Three turns: the first carries `image` (a block, or text in its place)."""
    first = image if isinstance(image, dict) else {"type": "text", "text": image}
    return [
        {"role": "user", "content": [{"type": "text", "text": "What is on my screen?"}, first]},
        {"role": "assistant", "content": "A window."},
        {"role": "user", "content": newest},
    ]


def openai_session(image: dict | str, newest: list | str = "And now?") -> list[dict]:
    first = image if isinstance(image, dict) else {"type": "text", "text": image}
    return [
        {"role": "user", "content": [{"type": "text", "text": "What is on my screen?"}, first]},
        {"role": "assistant", "content": "A window."},
        {"role": "user", "content": newest},
    ]


def test_an_image_in_an_earlier_anthropic_turn_becomes_the_tool_result_placeholder(worker):
    with anthropic(worker) as client:
        reply = client.messages.with_raw_response.create(
            model="claude-x", max_tokens=4, messages=anthropic_session(AN_IMAGE)
        )
        from server.api.images import placeholder

        assert reply.http_response.status_code == 200
        assert reply.parse().content
        assert "warning" not in reply.headers  # the history's image was dealt with turns ago
        # The prompt holds the placeholder where the image was, token for token.
        with_image = client.messages.count_tokens(
            model="claude-x", messages=anthropic_session(AN_IMAGE)
        )
        with_note = client.messages.count_tokens(
            model="claude-x", messages=anthropic_session(placeholder("image"))
        )
    assert with_image.input_tokens == with_note.input_tokens


def test_an_image_in_an_earlier_openai_turn_becomes_the_placeholder(worker):
    with openai(worker) as client:
        reply = client.chat.completions.with_raw_response.create(
            model="claude-x", max_tokens=4, messages=openai_session(OA_IMAGE)
        )
    assert reply.http_response.status_code == 200
    assert reply.parse().choices[0].message is not None
    assert "warning" not in reply.headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_image_in_the_newest_anthropic_turn_is_dropped_and_said(worker, stream):
    newest = [{"type": "text", "text": "And this one?"}, AN_IMAGE]
    with anthropic(worker) as client:
        kwargs = dict(model="claude-x", max_tokens=4, messages=anthropic_session("x", newest))
        if stream:
            with client.messages.with_streaming_response.create(**kwargs, stream=True) as r:
                assert r.http_response.status_code == 200
                headers, body = r.headers, r.http_response.read().decode()
            assert "message_stop" in body
        else:
            r = client.messages.with_raw_response.create(**kwargs)
            headers = r.headers
            assert r.parse().stop_reason in ("end_turn", "max_tokens")
    assert "messages[2].content[1]" in headers["warning"]
    assert "image" in headers["warning"] and "text only" in headers["warning"]
    assert "messages[2].content[1]: image dropped" in worker.log()


def test_an_image_in_the_newest_openai_turn_is_dropped_and_said(worker):
    newest = [{"type": "text", "text": "And this one?"}, OA_IMAGE]
    with openai(worker) as client:
        r = client.chat.completions.with_raw_response.create(
            model="claude-x", max_tokens=4, messages=openai_session("x", newest)
        )
    assert r.http_response.status_code == 200
    assert r.parse().choices[0].finish_reason in ("stop", "length")
    assert "messages[2].content[1]" in r.headers["warning"]
    assert "image_url" in r.headers["warning"]
