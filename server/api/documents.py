"""Anthropic `document` blocks a model reads as text: a plain-text, content or base64 PDF source.

Every model reads these; a URL or a file id is still a note (images.placeholder): a worker that
fetches URLs is a way in, and there is no Files API here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.api.pdf_text import PDF_MEDIA, is_pdf_data_url, pdf_data_url, pdf_text
from server.errors import BadRequest

ImageText = Callable[[dict[str, Any], str], str]  # an image block -> its prompt text

TEXT_SOURCES = ("text", "content")


def reads_as_text(block: dict[str, Any]) -> bool:
    source = block.get("source")
    return isinstance(source, dict) and (source.get("type") in TEXT_SOURCES or _is_pdf(source))


def _is_pdf(source: dict[str, Any]) -> bool:
    return source.get("type") == "base64" and source.get("media_type") == PDF_MEDIA


def carries_pdf(messages: list[Any]) -> bool:
    """Whether any message holds a PDF (its reading belongs off the event loop)."""
    for message in messages:
        for block in message.content if isinstance(message.content, list) else []:
            inner = block.get("content") if block.get("type") == "tool_result" else None
            for b in [block, *(inner if isinstance(inner, list) else [])]:
                if isinstance(b, dict) and b.get("type") == "document" and _pdf_block(b):
                    return True
    return False


def _pdf_block(block: dict[str, Any]) -> bool:
    source = block.get("source")
    return isinstance(source, dict) and _is_pdf(source)


def document_text(block: dict[str, Any], where: str, image_text: ImageText) -> str:
    """The prompt text of a text or content document: its title and context, then its text
    (a content document's images as `image_text` makes them: read, or a note)."""
    source = block["source"]
    if source["type"] == "text":
        data = source.get("data")
        if not isinstance(data, str):
            raise BadRequest(f"{where}.source.data: a text document's data must be a string")
        media = source.get("media_type", "text/plain")
        if media != "text/plain":
            said = f"a text document is text/plain, not {media!r}"
            raise BadRequest(f"{where}.source.media_type: {said}")
        body = data
    elif source["type"] == "base64":
        body = pdf_text(source.get("data"), where)
    else:
        body = _content_text(source.get("content"), f"{where}.source.content", image_text)
    head = [f"Document: {block['title']}"] if isinstance(block.get("title"), str) else []
    if isinstance(block.get("context"), str) and block["context"]:
        head.append(block["context"])
    return "\n".join([*head, body])


def _content_text(content: Any, where: str, image_text: ImageText) -> str:
    """A content source: a string, or text and image blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}: a content document holds a string or a list of blocks")
    parts = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "image":
            parts.append(image_text(block, f"{where}[{i}]"))
        elif kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        else:
            raise BadRequest(f"{where}[{i}]: a content document holds text and image blocks")
    return "\n".join(parts)


def inline_file_text(file: dict[str, Any], where: str) -> str | None:
    """An OpenAI file part's (chat `file.file_data`, Responses `input_file`) PDF as text, named by
    its filename; None where it holds no inline PDF (a file id or a URL: a note as before)."""
    data = file.get("file_data")
    if not isinstance(data, str) or not is_pdf_data_url(data):
        return None
    name = file.get("filename")
    head = [f"Document: {name}"] if isinstance(name, str) and name else []
    return "\n".join([*head, pdf_data_url(data, where)])


def parts_carry_pdf(parts: Any, part_type: str) -> bool:
    """Whether a list of content parts holds an inline PDF (its reading belongs off the event
    loop): chat's `file` parts (`part_type` "file") or Responses' `input_file` ones."""
    for part in parts if isinstance(parts, list) else []:
        if isinstance(part, dict) and part.get("type") == part_type:
            file = part.get("file") if part_type == "file" else part
            if isinstance(file, dict) and is_pdf_data_url(file.get("file_data")):
                return True
    return False
