"""Responses `instructions` and `input` items onto chat-template messages.

Items of one assistant turn (reasoning, message, function and custom tool calls) merge into one
assistant message, as the template renders a turn; each call output becomes a `tool` message.
System and developer text at the start joins `instructions` in the one system message; later
it becomes a user turn (templates take a system turn only first).
"""

from __future__ import annotations

import logging
from typing import Any

from server.api.documents import inline_file_text
from server.api.image_input import Images
from server.api.images import dropped_note, placeholder
from server.api.responses.tools import CUSTOM_INPUT, call_arguments, flat_name
from server.api.thinking_signature import reasoning_of
from server.errors import BadRequest

_TEXT_PARTS = ("input_text", "output_text", "text", "summary_text", "reasoning_text", "refusal")
_MEDIA_PARTS = ("input_image", "input_file", "input_audio")
log = logging.getLogger("server.api")
# Items of tools that ran on OpenAI's side: nothing of them reaches a local model's prompt.
_HOSTED_ITEMS = ("web_search_call", "file_search_call", "image_generation_call")


def _text(
    content: Any,
    where: str,
    images: Images | None = None,
    dropped: list[str] | None = None,
) -> str:
    """A message's or an output's content: a string or a list of parts. Images go into `images`
    where the model reads them; other media, and images for a text-only model, become a note
    (said in `dropped` where that is a list: the newest turn's user message loses them)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or a list of parts", param="input")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            parts.append(str(part.get("text") or part.get("refusal") or ""))
        elif kind == "input_image" and images is not None:
            parts.append(images.responses(part, f"{where}.content[{j}]"))
        elif kind == "input_file" and (read := _file_text(part, f"{where}.content[{j}]")):
            parts.append(read)
        elif kind in _MEDIA_PARTS:
            parts.append(placeholder(kind, images is not None))
            if dropped is not None:
                dropped.append(dropped_note(f"{where}.content[{j}]", kind, images is not None))
        else:
            raise BadRequest(
                f"{where}.content[{j}]: unsupported content part type {kind!r}", param="input"
            )
    return "".join(parts)


def _file_text(part: dict[str, Any], where: str) -> str | None:
    try:
        return inline_file_text(part, where)
    except BadRequest as exc:
        exc.param = exc.param or "input"
        raise


def _reasoning_text(item: dict[str, Any]) -> str:
    """A reasoning item's text: what its `encrypted_content` carries when this worker signed it
    (the reasoning as the model wrote it), else its full reasoning where sent, else its summary.
    A blob not ours (another server's, altered) is skipped, as a foreign thinking signature is."""
    blob = item.get("encrypted_content")
    if blob:
        carried = reasoning_of(blob)
        if carried is not None:
            return carried
        log.warning("a reasoning item's encrypted_content is not this worker's: its text is used")
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list) and parts:
            return "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    return ""


class _Turns:
    """Messages being built, with the assistant turn still open to more items."""

    def __init__(self, system: str, images: Images | None):
        self.system = [system] if system else []
        self.images = images  # None: the model reads text only, images become notes
        self.dropped: list[str] = []  # what the newest user message lost (said in the reply)
        self.messages: list[dict[str, Any]] = []
        self.offered: set[str] = set()  # call ids the conversation has made so far
        self.pending_reasoning: list[str] = []

    def assistant(self) -> dict[str, Any]:
        """The open assistant message (a new one after anything else)."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            self.messages.append({"role": "assistant", "content": ""})
        message = self.messages[-1]
        if self.pending_reasoning:
            joined = "\n".join(r for r in self.pending_reasoning if r)
            if joined:
                previous = message.get("reasoning_content")
                message["reasoning_content"] = f"{previous}\n{joined}" if previous else joined
            self.pending_reasoning = []
        return message

    def add_call(self, call_id: Any, name: str, arguments: dict[str, Any], where: str) -> None:
        if not isinstance(call_id, str) or not call_id:
            raise BadRequest(f"{where}: a call needs its call_id", param="input")
        message = self.assistant()
        if message.get("tool_calls") is None:
            message["tool_calls"] = []
        function = {"name": name, "arguments": arguments}
        message["tool_calls"].append({"id": call_id, "type": "function", "function": function})
        self.offered.add(call_id)

    def add_output(self, item: dict[str, Any], where: str) -> None:
        call_id = item.get("call_id")
        if call_id not in self.offered:
            # As the API does: an output answers a call made earlier in the conversation.
            raise BadRequest(
                f"{where}: no tool call found for output with call_id {call_id!r}", param="input"
            )
        output = item.get("output")
        # A tool's image (Codex's view_image) must not fail the agent's turn: a note at worst.
        text = output if isinstance(output, str) else _text(output, where, self.images)
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})


def _message(turns: _Turns, item: dict[str, Any], where: str, newest: bool) -> None:
    role = item.get("role")
    text = _text(item.get("content"), where, turns.images, turns.dropped if newest else None)
    if role in ("system", "developer"):
        if not turns.messages:
            turns.system.append(text)
        else:
            turns.messages.append({"role": "user", "content": text})
    elif role == "user":
        turns.messages.append({"role": "user", "content": text})
    elif role == "assistant":
        message = turns.assistant()
        if message.get("tool_calls"):  # text after this turn's calls: a turn of its own
            turns.messages.append({"role": "assistant", "content": text})
        else:
            message["content"] += text
    else:
        raise BadRequest(
            f"{where}.role must be system, developer, user or assistant (got {role!r})",
            param="input",
        )


def messages_of(
    instructions: str | None, items: str | list[Any], images: Images | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The template's messages, and notes of the media the newest item lost. `images`: where
    the model reads images (None: each becomes a note)."""
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    turns = _Turns(instructions or "", images)
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            _message(turns, item, where, newest=i == len(items) - 1)
        elif kind == "reasoning":
            turns.pending_reasoning.append(_reasoning_text(item))
        elif kind == "function_call":
            if not isinstance(item.get("name"), str):
                raise BadRequest(f"{where}: a function_call needs a name", param="input")
            name = flat_name(item["name"], item.get("namespace"), param="input")
            args = call_arguments(item.get("arguments", "{}"), where)
            turns.add_call(item.get("call_id"), name, args, where)
        elif kind == "custom_tool_call":
            if not isinstance(item.get("name"), str) or not isinstance(item.get("input"), str):
                raise BadRequest(f"{where}: a custom_tool_call needs name and input", param="input")
            name = flat_name(item["name"], item.get("namespace"), param="input")
            turns.add_call(item.get("call_id"), name, {CUSTOM_INPUT: item["input"]}, where)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            turns.add_output(item, where)
        elif kind in _HOSTED_ITEMS or kind == "additional_tools":  # tools: read by tool_set
            continue
        elif kind == "item_reference":
            # The routes put the stored item in its place; one left here was never looked up.
            raise BadRequest(
                f"{where}: item references are resolved from stored responses only (send the "
                "items themselves, or chain with previous_response_id)",
                param="input",
            )
        else:
            raise BadRequest(f"{where}: unsupported input item type {kind!r}", param="input")
    if turns.pending_reasoning:  # reasoning with nothing after it: its turn is the last one
        turns.assistant()
    out = [{"role": "system", "content": "\n\n".join(turns.system)}] if turns.system else []
    out += turns.messages
    if not out or all(m["role"] == "system" for m in out):
        raise BadRequest("input has no user message to answer", param="input")
    return out, turns.dropped
