"""One request of the agentic bench, streamed, with its time to first token measured on the
client: ours over the Anthropic Messages API, mlx_lm.server over OpenAI chat."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

import httpx

from bench.agentic_session import Session, to_openai


@dataclass
class Sample:
    label: str
    ttft: float | None = None
    total: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    text: str = ""
    error: str | None = None


def sse_events(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                return
            with contextlib.suppress(ValueError):
                yield json.loads(data)


def anthropic_request(url: str, session: Session, turn: int, args, label: str) -> Sample:
    """Stream /v1/messages; TTFT = first content_block_delta (or message_delta if none)."""
    body = {
        "model": "claude-sonnet-4-5",
        "system": session.system,
        "tools": session.tools,
        "messages": session.anthropic_messages(turn),
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
    }
    sample = Sample(label)
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "bench"}
    t0 = time.perf_counter()
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/messages",
            json=body,
            headers=headers,
            timeout=args.request_timeout,
            trust_env=False,
        ) as response:
            if response.status_code != 200:
                response.read()
                sample.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return sample
            for event in sse_events(response):
                kind = event.get("type")
                if kind == "message_start":
                    usage = event.get("message", {}).get("usage", {})
                    _anthropic_usage(sample, usage)
                elif kind == "content_block_delta":
                    if sample.ttft is None:
                        sample.ttft = time.perf_counter() - t0
                    delta = event.get("delta", {})
                    sample.text += delta.get("text", "") or delta.get("partial_json", "")
                elif kind == "message_delta":
                    if sample.ttft is None:
                        sample.ttft = time.perf_counter() - t0
                    _anthropic_usage(sample, event.get("usage") or {})
                elif kind == "error":
                    sample.error = json.dumps(event.get("error"))[:200]
    except httpx.HTTPError as exc:
        sample.error = f"{exc.__class__.__name__}: {exc}"
    sample.total = time.perf_counter() - t0
    return sample


def _anthropic_usage(sample: Sample, usage: dict) -> None:
    read = usage.get("cache_read_input_tokens")
    if isinstance(read, int):
        sample.cached_tokens = read
    parts = [
        usage.get(k)
        for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    ]
    if isinstance(usage.get("input_tokens"), int):
        sample.prompt_tokens = sum(p for p in parts if isinstance(p, int))


def openai_stream_body(session: Session, turn: int, max_tokens: int) -> dict:
    """The greedy streamed /v1/chat/completions body of `session`'s turn (usage included)."""
    messages, tools = to_openai(session, turn)
    return {
        "model": "default_model",
        "messages": messages,
        "tools": tools,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def openai_request(url: str, session: Session, turn: int, args, label: str) -> Sample:
    """Stream /v1/chat/completions; TTFT = first chunk with content (else the first chunk)."""
    body = openai_stream_body(session, turn, args.max_tokens)
    sample = Sample(label)
    first_any = None
    t0 = time.perf_counter()
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            timeout=args.request_timeout,
            trust_env=False,
        ) as response:
            if response.status_code != 200:
                response.read()
                sample.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return sample
            for chunk in sse_events(response):
                now = time.perf_counter() - t0
                first_any = first_any if first_any is not None else now
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    piece = delta.get("content") or delta.get("reasoning") or ""
                    if piece or delta.get("tool_calls"):
                        sample.ttft = sample.ttft if sample.ttft is not None else now
                        sample.text += piece
                usage = chunk.get("usage")
                if usage:
                    sample.prompt_tokens = usage.get("prompt_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    sample.cached_tokens = details.get("cached_tokens")
    except httpx.HTTPError as exc:
        sample.error = f"{exc.__class__.__name__}: {exc}"
    sample.total = time.perf_counter() - t0
    if sample.ttft is None:
        sample.ttft = first_any
    return sample
