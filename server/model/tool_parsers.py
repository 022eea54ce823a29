"""Which of mlx-lm's tool parsers reads a model's calls: the user's choice, else what mlx-lm
infers from the chat template, else Hermes JSON where the template writes `<tool_call>`.

Measured: a Hermes-style template that writes `tc.function.name` (not `tool_call.name`) gets no
parser from mlx-lm at all, so every call came back as text.
"""

from __future__ import annotations

import logging
import pkgutil
from typing import Any

log = logging.getLogger("server.engine")

FALLBACK = "json_tools"


def parser_names() -> list[str]:
    """mlx-lm's tool parser modules (`json_tools`, `qwen3_coder`, ...)."""
    import mlx_lm.tool_parsers as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.ispkg)


def parser_name(tokenizer: Any) -> str | None:
    module = getattr(getattr(tokenizer, "tool_parser", None), "__module__", "") or ""
    return module.rsplit(".", 1)[-1] or None


def tokenizer_config(choice: str | None) -> dict | None:
    """What `mlx_lm.load` takes to use `choice` instead of inferring a parser."""
    return {"tool_parser_type": choice} if choice else None


def fallback(path: str, tokenizer: Any) -> Any | None:
    """A tokenizer with the Hermes JSON parser where the template writes `<tool_call>` and
    mlx-lm inferred none; None when no fallback applies."""
    template = getattr(tokenizer, "chat_template", None)
    if parser_name(tokenizer) or not isinstance(template, str) or "<tool_call>" not in template:
        return None
    from mlx_lm.utils import load_tokenizer

    log.warning(
        "tool parser: the chat template writes <tool_call> but mlx-lm inferred no parser; "
        "falling back to %s (Hermes JSON); --tool-parser NAME chooses another",
        FALLBACK,
    )
    return load_tokenizer(path, tokenizer_config_extra=tokenizer_config(FALLBACK))


def describe(tokenizer: Any, source: str) -> dict:
    """/v1/status's `tool_parser`: the module and where the choice came from."""
    return {"name": parser_name(tokenizer), "source": source if parser_name(tokenizer) else None}
