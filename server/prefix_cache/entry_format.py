"""What a KV entry's file is: the token ids as its name and metadata, and what it must have been
made with (model, tokenizer, format, mlx and mlx-lm versions) to be loaded here."""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass

import numpy as np

from . import disk_index as di
from .trie import as_tokens


@dataclass(frozen=True)
class Compat:
    """What a KV file must have been made with to be loaded here."""

    model: str
    tokenizer: str
    mlx: str
    mlx_lm: str
    format: int = di.FORMAT_VERSION

    @classmethod
    def current(cls, model: str, tokenizer: str) -> Compat:
        import mlx.core as mx
        import mlx_lm

        # mlx's stub leaves out __version__, which the extension module sets.
        return cls(model, tokenizer, mx.__version__, mlx_lm.__version__)  # type: ignore[attr-defined]

    def mismatch(self, meta: dict) -> str | None:
        """Why `meta` (file metadata or index entry) is incompatible, or None."""
        for field, want in (
            ("format", str(self.format)),
            ("model", self.model),
            ("tokenizer", self.tokenizer),
            ("mlx", self.mlx),
            ("mlx_lm", self.mlx_lm),
        ):
            got = str(meta.get(field, ""))
            if got != want:
                return f"{field} {got or '(none)'} != {want}"
        return None


def tokens_key(tokens: np.ndarray) -> str:
    """Stable id of a token sequence (file name and RAM key)."""
    return hashlib.sha256(as_tokens(tokens).astype("<i4").tobytes()).hexdigest()[:24]


def encode_tokens(tokens: np.ndarray) -> str:
    return base64.b64encode(as_tokens(tokens).astype("<i4").tobytes()).decode()


def decode_tokens(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<i4").astype(np.int64)


class Named(io.BytesIO):
    """A file's bytes in memory, named so mlx-lm's loader picks the safetensors format."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name
