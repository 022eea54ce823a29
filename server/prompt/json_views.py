"""The prompt's text as a model writes it inside a JSON string, for copy drafts.

A template whose tool calls are JSON (Hermes `<tool_call>`, Mistral, Kimi K2) has the model write
a file it read as an escaped string argument: every newline, quote and backslash of the file in the
prompt is `\\n`, `\\"` and `\\\\` in the reply, so copies of the raw text break at each line (an
`Edit`'s old_string, a `Write`'s content). Each piece of the prompt between added tokens that
escaping changes is also given escaped, tokenized once (the segment encoder remembers pieces).
"""

from __future__ import annotations

import json
import re

from server.prompt.segments import SegmentEncoder

# mlx-lm's tool parsers whose calls carry their arguments as a JSON object.
JSON_CALL_PARSERS = frozenset({"json_tools", "mistral", "kimi_k2"})
MIN_CHARS = 64  # a shorter piece holds too little to copy
_ESCAPED = re.compile(r'[\n"\\\t]')


def writes_json_calls(tokenizer: object) -> bool:
    """Whether the model's tool calls are JSON (mlx-lm's parser for its template)."""
    module = getattr(getattr(tokenizer, "tool_parser", None), "__module__", "") or ""
    return module.rsplit(".", 1)[-1] in JSON_CALL_PARSERS


def escaped_pieces(encoder: SegmentEncoder, text: str) -> list[list[int]]:
    """The ids of each piece of `text` that JSON escaping changes, escaped as a JSON string's
    contents are (non-ASCII kept as it is, as models write it)."""
    pieces = encoder.split(text)
    out = []
    for piece in pieces:
        if len(piece) >= MIN_CHARS and _ESCAPED.search(piece):
            out.append(encoder.remembered(json.dumps(piece, ensure_ascii=False)[1:-1]))
    return out
