"""Warm prompt files: read into ChatRequests that the engine prefills before /health is ready
(`engine.sequential.warm_up`).

A file is plain text (one user message) or a JSON request body in the OpenAI or Anthropic shape
(a captured request wrapped as {"body": {...}} works too). Its rendered prompt's KV state is
stored, so the first real request sharing its prefix (system prompt, tools) starts warm. It reads
request bodies through both protocols, so it lives with them on the HTTP side.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from server.request import ChatRequest

log = logging.getLogger("server.cache")


def _is_anthropic(body: dict) -> bool:
    if "system" in body or any("input_schema" in t for t in body.get("tools") or []):
        return True
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") in ("tool_use", "tool_result") for b in content
        ):
            return True
    return False


def read_prompt(path: str | Path) -> ChatRequest:
    """The request a warm prompt file stands for (raises ValueError or a WorkerError)."""
    text = Path(path).read_text()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ChatRequest(messages=[{"role": "user", "content": text}])
    body = body.get("body", body) if isinstance(body.get("body"), dict) else body
    if not isinstance(body.get("messages"), list):
        raise ValueError("a JSON warm prompt needs a 'messages' list")
    body = {**body, "model": body.get("model") or "warm"}
    if _is_anthropic(body):
        from server.api.anthropic import protocol as anthropic

        return anthropic.to_chat_request(anthropic.CountTokensRequest.model_validate(body))
    from server.api.openai import protocol as openai

    return openai.to_chat_request(openai.ChatCompletionRequest.model_validate(body))


def read_prompts(files: list[str]) -> list[tuple[str, ChatRequest]]:
    """(file, request) for each readable file; a bad one is logged and skipped, never fatal."""
    prompts = []
    for path in files:
        try:
            prompts.append((path, read_prompt(path)))
        except Exception as exc:
            log.error("warm prompt %s skipped: %s", path, exc)
    return prompts
