"""Warm prompt files: read into ChatRequests that `Engine.warm` prefills before /health is ready.

A file is plain text (one user message) or a JSON request body in the OpenAI or Anthropic shape
(a captured request wrapped as {"body": {...}} works too). Its rendered prompt's KV state is
stored, so the first real request sharing its prefix (system prompt, tools) starts warm. This
module sits on the top floor (beside serve.py): it reads request bodies through both protocols.
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
        from server.anthropic_api.protocol import CountTokensRequest, to_chat_request

        return to_chat_request(CountTokensRequest.model_validate(body))
    from server.openai_api.protocol import ChatCompletionRequest, to_chat_request

    return to_chat_request(ChatCompletionRequest.model_validate(body))


def read_prompts(files: list[str]) -> list[tuple[str, ChatRequest]]:
    """(file, request) for each readable file; a bad one is logged and skipped, never fatal."""
    prompts = []
    for path in files:
        try:
            prompts.append((path, read_prompt(path)))
        except Exception as exc:
            log.error("warm prompt %s skipped: %s", path, exc)
    return prompts


def warm_up(engine, prompts: list[tuple[str, ChatRequest]]) -> None:
    """Prefill each (name, request) through the engine's own path; a failure is logged, skipped."""
    for name, request in prompts:
        try:
            _warm_one(engine, name, request)
        except Exception as exc:
            log.error("warm prompt %s skipped: %s", name, exc)


def _warm_one(engine, name: str, request: ChatRequest) -> None:
    """One greedy token through the request path: its prompt's KV state lands in the cache."""
    import dataclasses
    import time

    from server.job import Job
    from server.request import Sampling
    from server.sequential import Generation

    rendered = engine.renderer.render(request)
    greedy = dataclasses.replace(request, sampling=Sampling(temperature=0.0))
    job = Job(request=greedy, rendered=rendered, loop=None)
    tokens = rendered.tokens
    prompt_cache, n_cached = engine._cache_for(tokens)
    run = Generation(prompt_cache, n_cached)
    engine._generate(job, run, engine._parser(job), max_tokens=1)
    seconds = (run.first_token_at or time.perf_counter()) - run.started
    engine._record_prefill(len(tokens) - n_cached, seconds)
    if not run.checkpointed:
        engine._store(tokens[:-1], prompt_cache)
    log.info(
        "warm prompt %s: %d tokens (%d already cached) in %.1fs",
        name,
        len(tokens),
        n_cached,
        seconds,
    )
