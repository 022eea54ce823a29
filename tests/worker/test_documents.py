"""Anthropic `document` blocks with a text or content source reach the prompt as text, on every
model; a malformed one is the API's 400 naming the block. Through the official SDK."""

from __future__ import annotations

import anthropic as sdk
import pytest

from server.api.images import placeholder
from tests.worker.test_images import AN_IMAGE, anthropic

TEXT_DOC = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "Ports: 8080 and 18555."},
    "title": "ports.txt",
    "context": "The service's notes.",
}
AS_TEXT = "Document: ports.txt\nThe service's notes.\nPorts: 8080 and 18555."


def ask(block: dict) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "Which ports?"}, block]}]


def text(body: str) -> dict:
    return {"type": "text", "text": body}


def test_a_text_document_is_read_as_its_title_context_and_text(worker):
    with anthropic(worker) as client:
        reply = client.messages.with_raw_response.create(
            model="claude-x", max_tokens=4, messages=ask(TEXT_DOC)
        )
        assert reply.http_response.status_code == 200
        assert "warning" not in reply.headers  # nothing was dropped
        with_doc = client.messages.count_tokens(model="claude-x", messages=ask(TEXT_DOC))
        with_text = client.messages.count_tokens(model="claude-x", messages=ask(text(AS_TEXT)))
        note = client.messages.count_tokens(model="claude-x", messages=ask(text("[document]")))
    assert with_doc.input_tokens == with_text.input_tokens
    assert with_doc.input_tokens > note.input_tokens


def test_a_content_document_in_a_tool_result_reaches_the_model(worker):
    """Its text blocks, and its image as the note a text-only model's images become."""
    content = {"type": "content", "content": [text("line one"), AN_IMAGE, text("line two")]}
    document = {"type": "document", "source": content}

    def session(result: list[dict]) -> list[dict]:
        call = {"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": "a.txt"}}
        answer = {"type": "tool_result", "tool_use_id": "t1", "content": result}
        return [
            {"role": "user", "content": "Read a.txt"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [answer]},
        ]

    as_text = [text(f"line one\n{placeholder('image')}\nline two")]
    tools = [{"name": "Read", "input_schema": {"type": "object"}}]
    with anthropic(worker) as client:
        count = client.messages.count_tokens
        with_doc = count(model="claude-x", tools=tools, messages=session([document]))
        with_text = count(model="claude-x", tools=tools, messages=session(as_text))
        reply = client.messages.create(
            model="claude-x", max_tokens=4, tools=tools, messages=session([document])
        )
    assert with_doc.input_tokens == with_text.input_tokens
    assert reply.stop_reason in ("end_turn", "max_tokens", "tool_use")


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ({"type": "text", "media_type": "text/plain", "data": 7}, "source.data"),
        ({"type": "text", "media_type": "text/html", "data": "<p>"}, "source.media_type"),
        ({"type": "content", "content": [{"type": "audio"}]}, "source.content[0]"),
        ({"type": "content", "content": {"text": "x"}}, "source.content"),
    ],
)
def test_a_malformed_text_document_is_a_400_naming_it(worker, source, named):
    with anthropic(worker) as client, pytest.raises(sdk.BadRequestError) as caught:
        client.messages.create(
            model="claude-x", max_tokens=4, messages=ask({"type": "document", "source": source})
        )
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert f"messages[0].content[1].{named}" in caught.value.body["error"]["message"]
