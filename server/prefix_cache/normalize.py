"""Make consecutive Claude Code requests render to prompts that share their prefix.

Claude Code puts `x-anthropic-billing-header: cc_version=...; cc_entrypoint=...;` first in
`system`; its value changes between sessions (and in some versions per request), and being
first it would break every token prefix behind it. `cache_control` markers move to the newest
message on every turn. Neither means anything to a local model, so both go.
"""

from __future__ import annotations

import copy
from typing import Any

BILLING_PREFIX = "x-anthropic-billing-header:"


def _is_billing(text: str) -> bool:
    return text.lstrip().lower().startswith(BILLING_PREFIX)


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _strip_billing_lines(text: str) -> str:
    lines = text.split("\n")
    kept = [line for line in lines if not _is_billing(line)]
    return "\n".join(kept).lstrip("\n") if len(kept) != len(lines) else text


def normalize_anthropic_request(body: dict) -> dict:
    """A copy of an Anthropic `/v1/messages` body without billing headers or cache markers.

    - `system` text blocks that are a billing header are dropped (a string `system` loses the
      header line);
    - `cache_control` keys are removed everywhere (system, messages, tools).
    The input is not modified.
    """
    out = _strip_cache_control(copy.deepcopy(body))
    system = out.get("system")
    if isinstance(system, str):
        out["system"] = _strip_billing_lines(system)
    elif isinstance(system, list):
        out["system"] = [
            block
            for block in system
            if not (
                isinstance(block, dict)
                and block.get("type") == "text"
                and _is_billing(block.get("text", ""))
            )
        ]
    return out
