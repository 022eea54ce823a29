"""Documents reach the prompt as text on every model: Anthropic `document` blocks (text, content
or PDF sources), OpenAI `file` parts and Responses `input_file` parts holding an inline PDF; a
malformed one is the protocol's 400 naming it. Through the official SDKs."""

from __future__ import annotations

import base64

import anthropic as sdk
import openai as openai_sdk
import pytest

from server.api.images import placeholder
from server.api.pdf_text import PDF_MEDIA as PDF
from tests.pdf_files import text_pdf
from tests.worker.test_images import AN_IMAGE, anthropic, openai

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


def pdf_document(data: bytes | str, title: str | None = "spec.pdf") -> dict:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    block = {"type": "document", "source": {"type": "base64", "media_type": PDF, "data": encoded}}
    return {**block, "title": title} if title else block


def test_a_pdf_is_read_page_by_page_over_the_sdk_and_in_a_tool_result(worker):
    pdf = pdf_document(text_pdf(["Ports: 8080 and 18555.", "", "The door keeps its address."]))
    pages = "--- page 1 ---\nPorts: 8080 and 18555.\n\n--- page 2 ---\n\n\n--- page 3 ---\n"
    as_text = f"Document: spec.pdf\n{pages}The door keeps its address."
    with anthropic(worker) as client:
        reply = client.messages.with_raw_response.create(
            model="claude-x", max_tokens=4, messages=ask(pdf)
        )
        assert reply.http_response.status_code == 200
        assert "warning" not in reply.headers  # read, not dropped
        with_pdf = client.messages.count_tokens(model="claude-x", messages=ask(pdf))
        with_text = client.messages.count_tokens(model="claude-x", messages=ask(text(as_text)))
    assert with_pdf.input_tokens == with_text.input_tokens


def test_a_pdf_without_a_text_layer_reads_as_a_note_saying_so(worker):
    pdf = pdf_document(text_pdf(["", ""]), title=None)
    note = "[a PDF of 2 pages with no text layer (scanned?): its text cannot be read]"
    with anthropic(worker) as client:
        with_pdf = client.messages.count_tokens(model="claude-x", messages=ask(pdf))
        with_note = client.messages.count_tokens(model="claude-x", messages=ask(text(note)))
    assert with_pdf.input_tokens == with_note.input_tokens


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ("not base64!", "not valid base64"),
        (b"GIF89a not a pdf", "not a PDF"),
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "could not be read"),
        (text_pdf(["page"] * 101), "101 pages (at most 100)"),
    ],
    ids=["base64", "not-pdf", "truncated", "pages"],
)
def test_a_bad_pdf_is_a_400_naming_the_block(worker, data, said):
    with anthropic(worker) as client, pytest.raises(sdk.BadRequestError) as caught:
        client.messages.create(model="claude-x", max_tokens=4, messages=ask(pdf_document(data)))
    message = caught.value.body["error"]["message"]
    assert caught.value.status_code == 400
    assert "messages[0].content[1]" in message and said in message


PAGES = ["Ports: 8080 and 18555.", "The door keeps its address."]
PAGES_TEXT = "--- page 1 ---\nPorts: 8080 and 18555.\n\n--- page 2 ---\nThe door keeps its address."


def pdf_url(data: bytes) -> str:
    return f"data:{PDF};base64," + base64.b64encode(data).decode()


def test_an_openai_file_part_with_a_pdf_is_read_as_text(worker):
    part = {"type": "file", "file": {"filename": "spec.pdf", "file_data": pdf_url(text_pdf(PAGES))}}

    def prompt_tokens(client, extra: dict) -> int:
        content = [{"type": "text", "text": "Which ports?"}, extra]
        messages = [{"role": "user", "content": content}]
        reply = client.chat.completions.create(model="claude-x", max_tokens=1, messages=messages)
        return reply.usage.prompt_tokens

    with openai(worker) as client:
        with_pdf = prompt_tokens(client, part)
        with_text = prompt_tokens(client, text(f"Document: spec.pdf\n{PAGES_TEXT}"))
        with pytest.raises(openai_sdk.BadRequestError) as caught:
            prompt_tokens(client, {"type": "file", "file": {"file_data": pdf_url(b"%PDF-1.4")}})
    assert with_pdf == with_text
    error = caught.value.body
    assert error["param"] == "messages" and "messages[0].content[1]" in error["message"]


def test_a_responses_input_file_with_a_pdf_is_read_as_text(worker):
    part = {"type": "input_file", "filename": "spec.pdf", "file_data": pdf_url(text_pdf(PAGES))}

    def count(client, extra: dict) -> int:
        content = [{"type": "input_text", "text": "Which ports?"}, extra]
        said = client.responses.input_tokens.count(
            model="claude-x", input=[{"role": "user", "content": content}]
        )
        return said.input_tokens

    as_text = {"type": "input_text", "text": f"Document: spec.pdf\n{PAGES_TEXT}"}
    with openai(worker) as client:
        assert count(client, part) == count(client, as_text)
        with pytest.raises(openai_sdk.BadRequestError) as caught:
            count(client, {"type": "input_file", "file_data": pdf_url(b"GIF89a")})
    assert caught.value.body["param"] == "input"
    assert "not a PDF" in caught.value.body["message"]
