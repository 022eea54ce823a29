"""What a prompt far over the context costs: it is refused before it is tokenized in full, and a
large tokenization gives its memory back (a 23 MB prompt took 139 s and 3.4 GB to refuse, and
kept 1.9 GB after).

Two sound lower bounds on the token count, cheapest first:
- From the length in characters: a token covers at most as many characters as its longest
  vocabulary entry has (byte-level entries count bytes, and a character is at least one byte),
  times what the tokenizer's normalizer may fold together (NFC joins up to 4 code points into
  one). Only for tokenizers whose pipeline drops no characters; others get no such bound.
- From a prefix: the tokens of the prompt's first part, cut before a space that follows a word
  (a pre-tokenizer boundary, so the whole prompt has at least those), less a margin.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger("server.prompt")

# Normalizers that never shrink text more than this factor (NFC/NFKC compose at most 4 -> 1).
_NORMALIZER_FOLD = {"NFC": 4, "NFKC": 4, "NFD": 1, "NFKD": 1, "Prepend": 1, "Lowercase": 1}
# Pre-tokenizers that keep every character (split only).
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Digits", "UnicodeScripts"}
PROBE_CHARS_PER_TOKEN = 8  # a prefix this many characters per context token is probed
PROBE_MARGIN = 16  # tokens a cut that is not a boundary after all could add
BIG_TEXT = 1 << 20  # characters from which a tokenization's freed memory is given back


def _normalizer_fold(spec: dict | None) -> int | None:
    """How many characters the normalizer may fold into one (None: it may drop text)."""
    if spec is None:
        return 1
    kind = spec.get("type")
    if kind == "Sequence":
        fold = 1
        for step in spec.get("normalizers") or []:
            f = _normalizer_fold(step)
            if f is None:
                return None
            fold *= f
        return fold
    if kind == "Replace":
        pattern, content = (spec.get("pattern") or {}).get("String"), spec.get("content") or ""
        if not pattern or not content:
            return None  # a regex or a deletion: no bound
        return max(1, -(-len(pattern) // len(content)))
    return _NORMALIZER_FOLD.get(kind or "")


def _keeps_characters(spec: dict | None) -> bool:
    if spec is None:
        return True
    kind = spec.get("type")
    if kind == "Sequence":
        return all(_keeps_characters(s) for s in spec.get("pretokenizers") or [])
    if kind in ("Split", "Punctuation"):
        return str(spec.get("behavior", "")).lower() != "removed"
    return kind in _KEEPING_PRE_TOKENIZERS


def max_chars_per_token(tokenizer: Any) -> int | None:
    """The most prompt characters one token can stand for, or None where no sound bound is
    known (no fast tokenizer, a normalizer or pre-tokenizer that drops text, fused unknowns)."""
    # A transformers tokenizer, or mlx-lm's wrapper of one.
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
        getattr(tokenizer, "_tokenizer", None), "backend_tokenizer", None
    )
    try:
        spec = json.loads(backend.to_str()) if backend is not None else None
        vocab = tokenizer.get_vocab() if spec is not None else None
    except Exception:  # an unusual tokenizer: no bound, tokenized in full as before
        return None
    if not spec or not vocab:
        return None
    model = spec.get("model") or {}
    if model.get("type") not in ("BPE", "Unigram") or (
        model.get("fuse_unk") and not model.get("byte_fallback")
    ):
        return None  # WordPiece and fused unknowns: one token can stand for a whole word
    fold = _normalizer_fold(spec.get("normalizer"))
    if fold is None or not _keeps_characters(spec.get("pre_tokenizer")):
        return None
    longest = max(len(str(piece)) for piece in vocab)
    return max(1, longest) * fold


class LengthBound:
    """A prompt's least token count where it is over `context` (else None), without tokenizing
    it in full; `encode` is the renderer's (the same ids the prompt would get)."""

    def __init__(self, tokenizer: Any, encode: Callable[[str], list[int]], context: int | None):
        self.context = context
        self.encode = encode
        self.chars_per_token = max_chars_per_token(tokenizer) if context else None
        if context:
            log.info("prompt length bound: at most %s characters a token", self.chars_per_token)

    def at_least(self, text: str) -> int | None:
        context = self.context
        if not context:
            return None
        if self.chars_per_token and len(text) // self.chars_per_token >= context:
            return len(text) // self.chars_per_token
        probe = context * PROBE_CHARS_PER_TOKEN
        if len(text) <= probe:
            return None  # short enough to tokenize whole
        cut = _boundary_before(text, probe)
        if cut is None:
            return None
        counted = len(self.encode(text[:cut])) - PROBE_MARGIN
        return counted if counted >= context else None


_WORD_THEN_SPACE = re.compile(r"\S\s")


def _boundary_before(text: str, limit: int) -> int | None:
    """The last position before `limit` right after a non-space and before a space."""
    window = max(0, limit - 4096)
    ends = [m.start() + 1 for m in _WORD_THEN_SPACE.finditer(text, window, limit + 1)]
    return ends[-1] if ends else None


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None  # macOS's allocator returns freed pages by itself
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_TRIM = _malloc_trim()


def give_back_memory(chars: int) -> None:
    """After tokenizing `chars` characters: return the tokenizer's freed buffers to the system
    (glibc keeps freed arenas; a 20 MB prompt left 1.9 GB of RSS behind)."""
    if _TRIM is not None and chars >= BIG_TEXT:
        _TRIM(0)
