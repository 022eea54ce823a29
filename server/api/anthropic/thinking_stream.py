"""The SSE events of a thinking block: start, thinking_delta, and the signature_delta that
closes it (Claude Code drops an unsigned thinking block and with it the turn)."""

from __future__ import annotations

from collections.abc import Callable

from server.api.thinking_signature import sign


class ThinkingBlocks:
    """Encodes one thinking block at a time; `show=False` (display omitted) sends no text."""

    def __init__(self, sse: Callable[[str, dict], str], show: bool):
        self.sse, self.show = sse, show
        self._text: list[str] = []

    def open(self, index: int) -> str:
        self._text = []
        block = {"type": "thinking", "thinking": "", "signature": ""}
        return self.sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )

    def delta(self, index: int, text: str) -> str:
        self._text.append(text)
        if not self.show:
            return ""
        return self._delta(index, {"type": "thinking_delta", "thinking": text})

    def close(self, index: int) -> str:
        signature = sign("".join(self._text))
        return self._delta(index, {"type": "signature_delta", "signature": signature})

    def _delta(self, index: int, delta: dict) -> str:
        return self.sse(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
