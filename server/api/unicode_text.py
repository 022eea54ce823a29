"""Text no tokenizer can encode: lone UTF-16 surrogates, which a JSON escape ("\\ud800") carries
into a Python str. They become U+FFFD, as the SDKs' own encoders do, so one stray half of an
emoji in a pasted file costs that character, not the request (nor every later turn)."""

from __future__ import annotations

import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads joins every valid pair


def replace_unencodable(value: Any) -> Any:
    """`value` (a parsed JSON body) with every lone surrogate in its strings replaced."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value
    if isinstance(value, list):
        return [replace_unencodable(v) for v in value]
    if isinstance(value, dict):
        return {replace_unencodable(k): replace_unencodable(v) for k, v in value.items()}
    return value
