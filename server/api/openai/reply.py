"""OpenAI reply pieces: the usage object and the non-streaming chat.completion body."""

from __future__ import annotations

import json
import time

from server.api.openai.protocol import FINISH_REASONS
from server.request import Collected, Usage


def usage_dict(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def completion_body(result: Collected, *, completion_id: str, model: str) -> dict:
    finished = result.finished
    assert finished is not None, "collect returns only once the reply finished"
    message: dict = {"role": "assistant", "content": result.text or None}
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    if result.calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in result.calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(finished.reason, "stop"),
            }
        ],
        "usage": usage_dict(finished.usage),
    }
