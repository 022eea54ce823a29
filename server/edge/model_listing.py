"""One served model as `/v1/models` lists it: stdlib only, shared by the worker's routes and
mlxctl's front door so both SDKs read the same list wherever it comes from."""

from __future__ import annotations

import time


def model_entry(name: str, created: int, **extra: object) -> dict:
    """OpenAI's fields and Anthropic's side by side (both SDKs read this list), then `extra`."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "mlxctl",
        "type": "model",
        "display_name": name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
        **extra,
    }
