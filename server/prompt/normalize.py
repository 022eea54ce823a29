"""Make consecutive Claude Code requests render to prompts that share their prefix.

Claude Code puts `x-anthropic-billing-header: cc_version=...; cc_entrypoint=...;` first in
`system`; its value changes between sessions (and in some versions per request), and being
first it would break every token prefix behind it. `cache_control` markers move to the newest
message on every turn. Neither means anything to a local model, so both go: once, on the
internal ChatRequest, whichever protocol it came in by.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from server.request import ChatRequest

BILLING_PREFIX = "x-anthropic-billing-header:"


def _is_billing(line: str) -> bool:
    return line.lstrip().lower().startswith(BILLING_PREFIX)


def strip_billing_header(text: str) -> str:
    """`text` without its billing header lines (unchanged when it has none)."""
    lines = text.split("\n")
    kept = [line for line in lines if not _is_billing(line)]
    return "\n".join(kept).lstrip("\n") if len(kept) != len(lines) else text


def _without_cache_control(item: dict[str, Any]) -> dict[str, Any]:
    # One level only: a tool's JSON schema or a call's arguments may name a field cache_control.
    return {k: v for k, v in item.items() if k != "cache_control"}


def _message(message: dict[str, Any]) -> dict[str, Any]:
    out = _without_cache_control(message)
    if out.get("role") == "system" and isinstance(out.get("content"), str):
        out["content"] = strip_billing_header(out["content"])
    return out


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    out = _without_cache_control(tool)
    if isinstance(out.get("function"), dict):
        out["function"] = _without_cache_control(out["function"])
    return out


def normalize(request: ChatRequest) -> ChatRequest:
    """A copy of `request` without billing headers in system messages or cache markers."""
    return dataclasses.replace(
        request,
        messages=[_message(m) for m in request.messages],
        tools=[_tool(t) for t in request.tools] if request.tools else request.tools,
    )
