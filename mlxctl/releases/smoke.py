"""Smoke tests a release must pass before it takes the main port, chosen by what it claims."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlxctl.errors import ReleaseError
from mlxctl.releases.record import Release
from mlxctl.worker_client import WorkerClient

TIMEOUT = 120.0  # a generation on a cold model can take a while
_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file from the workspace.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    }
]
# A long shared prefix, so a prefix cache has something worth reusing.
_CACHE_PROMPT = " ".join(
    f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(80)
)


class SmokeFailure(ReleaseError):
    """A smoke test saw the wrong thing; the message says what (the switch then rolls back)."""


@dataclass
class Check:
    name: str
    run: Callable[[WorkerClient, str], str]  # (client, model) -> what it saw


def _post(client: WorkerClient, path: str, body: dict) -> dict:
    reply = client.request("POST", path, body)
    if reply.status != 200:
        raise SmokeFailure(f"HTTP {reply.status}: {reply.text[:200]}")
    try:
        said = reply.json()
    except ValueError:
        said = None
    if not isinstance(said, dict):  # a failed check, not a traceback that skips the roll-back
        raise SmokeFailure(f"not a JSON object: {reply.text[:200]}")
    return said


def check_health(client: WorkerClient, model: str) -> str:
    code = client.health()
    if code != 200:
        raise SmokeFailure(f"/health answered {code}")
    return "200"


def check_chat(client: WorkerClient, model: str) -> str:
    body = {
        "model": model,
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    started = time.perf_counter()
    reply = _post(client, "/v1/chat/completions", body)
    choice = (reply.get("choices") or [{}])[0]
    if "message" not in choice:
        raise SmokeFailure(f"no message in reply: {json.dumps(reply)[:200]}")
    return (
        f"{reply.get('usage', {}).get('completion_tokens', '?')} tokens in "
        f"{time.perf_counter() - started:.2f}s"
    )


def check_stream(client: WorkerClient, model: str) -> str:
    body = {
        "model": model,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "messages": [{"role": "user", "content": "Count to three."}],
    }
    chunks, done = 0, False
    with client.stream("POST", "/v1/chat/completions", body) as (status, lines):
        if status != 200:
            raise SmokeFailure(f"HTTP {status}")
        for line in lines:
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                json.loads(line[6:])
                chunks += 1
    if not done or chunks == 0:
        raise SmokeFailure(f"stream ended without [DONE] after {chunks} chunks")
    return f"{chunks} chunks"


def check_tools(client: WorkerClient, model: str) -> str:
    """A tool-call round trip: a request offering tools, then the history with a call and its
    result. Either reply may be text or a call, but each must be a well-formed message."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is in README.md?"}]
    first = _post(
        client,
        "/v1/chat/completions",
        {
            "model": model,
            "max_tokens": 16,
            "temperature": 0,
            "tools": _TOOLS,
            "messages": messages,
        },
    )
    message = first["choices"][0]["message"]
    for call in message.get("tool_calls") or []:
        json.loads(call["function"]["arguments"])
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_smoke",
                    "type": "function",
                    "function": {
                        "name": "read_file",
                        "arguments": json.dumps({"path": "README.md"}),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_smoke", "content": "# Project\nHello."},
    ]
    second = _post(
        client,
        "/v1/chat/completions",
        {
            "model": model,
            "max_tokens": 8,
            "temperature": 0,
            "tools": _TOOLS,
            "messages": messages,
        },
    )
    if "message" not in second["choices"][0]:
        raise SmokeFailure("no message after the tool result")
    return f"finish_reason {first['choices'][0].get('finish_reason')}"


def check_anthropic_stream(client: WorkerClient, model: str) -> str:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 8,
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    events = []
    headers = {"anthropic-version": "2023-06-01"}
    with client.stream("POST", "/v1/messages", body, headers) as (status, lines):
        if status != 200:
            raise SmokeFailure(f"HTTP {status}")
        for line in lines:
            if line.startswith("event: "):
                events.append(line[7:])
    if not events or events[0] != "message_start" or events[-1] != "message_stop":
        raise SmokeFailure(f"bad event sequence: {events[:3]}...{events[-2:]}")
    return f"{len(events)} events"


def check_cache(client: WorkerClient, model: str) -> str:
    """The same long prompt twice: the second must reuse the first's prefix."""
    body = {
        "model": model,
        "max_tokens": 1,
        "temperature": 0,
        "messages": [{"role": "user", "content": _CACHE_PROMPT}],
    }
    timings, cached = [], 0
    for _ in range(2):
        started = time.perf_counter()
        reply = _post(client, "/v1/chat/completions", body)
        timings.append(time.perf_counter() - started)
        details = reply.get("usage", {}).get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") or 0
    if cached <= 0:
        raise SmokeFailure("the repeated prompt reported no cached tokens")
    return f"{cached} cached tokens, {timings[0] / max(timings[1], 1e-6):.1f}x faster"


def checks_for(release: Release) -> list[Check]:
    checks = [Check("health", check_health)]
    if release.claims("openai"):
        checks.append(Check("chat", check_chat))
        if release.claims("stream"):
            checks.append(Check("stream", check_stream))
        if release.claims("tools"):
            checks.append(Check("tool call", check_tools))
    if release.claims("anthropic"):
        checks.append(Check("anthropic stream", check_anthropic_stream))
    if release.claims("cache") and release.claims("openai"):
        checks.append(Check("cache hit", check_cache))
    return checks
