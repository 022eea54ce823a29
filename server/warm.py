"""Warm prompts: prompt files prefilled into the prefix cache at startup, before /health is ready.

A file is plain text (one user message) or a JSON request body in the OpenAI or Anthropic shape
(a captured request wrapped as {"body": {...}} works too). Its rendered prompt's KV state is
stored, so the first real request sharing its prefix (system prompt, tools) starts warm.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from server.request import ChatRequest

log = logging.getLogger("server.cache")
DEFAULT_STEP = 2048


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
        from server.anthropic_api.protocol import CountTokensRequest, to_chat_request

        return to_chat_request(CountTokensRequest.model_validate(body))
    from server.openai_api.protocol import ChatCompletionRequest, to_chat_request

    return to_chat_request(ChatCompletionRequest.model_validate(body))


def prefill(model: Any, cache, tokens: list[int], step: int) -> tuple[int, float]:
    """Prefill `tokens` into `cache` (the seam adapter) and store them: (new tokens, seconds)."""
    import mlx.core as mx

    prompt_cache, n_cached = cache.lookup(tokens)
    if prompt_cache is None:
        from mlx_lm.models.cache import make_prompt_cache

        prompt_cache, n_cached = make_prompt_cache(model), 0
    started = time.perf_counter()
    ids = mx.array(tokens[n_cached:])[None]
    for i in range(0, ids.shape[1], step):
        model(ids[:, i : i + step], cache=prompt_cache)
        mx.eval([c.state for c in prompt_cache])
    seconds = time.perf_counter() - started
    cache.store(tokens, prompt_cache)
    return len(tokens) - n_cached, seconds


def warm_up(loaded: Any, cache, files: list[str], step: int | None = None) -> None:
    """Prefill each file's prompt; a bad file is logged and skipped, never fatal."""
    from server.prompt import PromptRenderer

    renderer = PromptRenderer(loaded.tokenizer, loaded.config)
    for path in files:
        try:
            tokens = renderer.render(read_prompt(path)).tokens
            new, seconds = prefill(loaded.model, cache, tokens, step or DEFAULT_STEP)
        except Exception as exc:
            log.error("warm prompt %s skipped: %s", path, exc)
            continue
        if new > 0 and seconds > 0:
            cache.record_prefill(new, seconds)
        log.info(
            "warm prompt %s: %d tokens (%d already cached) in %.1fs",
            path,
            len(tokens),
            len(tokens) - new,
            seconds,
        )
