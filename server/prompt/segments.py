"""Tokenize a rendered prompt piece by piece, remembering the pieces seen before.

Consecutive agent requests repeat the system prompt, the tools and every earlier message word for
word; with the prefix cache, encoding those ~30K tokens again is most of a follow-up's fixed cost.
Tokenizers split out added tokens (`<|im_start|>`, ...) before anything else, so the ids of the
pieces between them, joined, are the ids of the whole text. That is checked against a plain
encode on the first prompts; a tokenizer where it does not hold gets plain encodes only.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger("server.prompt")

CHECKS = 3  # prompts encoded both ways before the pieces are trusted alone
MAX_CHARS = 8 << 20  # memo bound: total characters of remembered pieces


def _added_tokens(tokenizer: Any) -> list[str]:
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    decoder = getattr(inner, "added_tokens_decoder", None)
    if not isinstance(decoder, dict):
        return []
    contents = (str(getattr(t, "content", t)) for t in decoder.values())
    return [c for c in contents if c]


class SegmentEncoder:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        tokens = sorted(set(_added_tokens(tokenizer)), key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None
        self.enabled = self._split is not None
        self._checks_left = CHECKS
        self._memo: OrderedDict[str, list[int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def _plain(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode(self, text: str) -> list[int]:
        if not self.enabled or self._split is None:  # enabled implies a split; says so to mypy
            return self._plain(text)
        ids: list[int] = []
        for piece in self._split.split(text):
            if piece:
                ids += self._piece(piece)
        with self._lock:
            check = self._checks_left > 0
            self._checks_left -= int(check)
        if check:
            plain = self._plain(text)
            if plain != ids:
                log.info("tokenizer does not encode piece by piece; encoding whole prompts")
                self.enabled = False
                return plain
        return ids

    def pieces(self, text: str) -> list[tuple[str, list[int]]]:
        """(piece, ids) between added tokens, as `encode` joins them (one piece when disabled)."""
        if not self.enabled or self._split is None:
            return [(text, self._plain(text))]
        return [(p, self._piece(p)) for p in self._split.split(text) if p]

    def split(self, text: str) -> list[str]:
        """The pieces of `text` between added tokens (the whole text where none are known)."""
        return [p for p in self._split.split(text) if p] if self._split is not None else [text]

    def remembered(self, piece: str) -> list[int]:
        """The ids of a piece with no added tokens in it, remembered like the prompt's pieces."""
        return self._piece(piece)

    def _piece(self, piece: str) -> list[int]:
        with self._lock:
            ids = self._memo.get(piece)
            if ids is not None:
                self._memo.move_to_end(piece)
                return ids
        ids = self._plain(piece)
        with self._lock:
            if piece not in self._memo and len(piece) <= MAX_CHARS // 4:
                self._memo[piece] = ids
                self._chars += len(piece)
                while self._chars > MAX_CHARS:
                    old, _ = self._memo.popitem(last=False)
                    self._chars -= len(old)
        return ids
