"""Identify a model and its tokenizer cheaply, so a KV file is never loaded into another model.

Only hashlib/os: the supervisor computes the same folder name without importing MLX.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".npz", ".bin")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
_EDGE = 1 << 20  # bytes hashed at each end of a weight file


def _hash_file_edges(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        if size > 2 * _EDGE:
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))


def model_fingerprint(model_dir: str | os.PathLike, variant: str = "") -> str:
    """16 hex digits over config.json, every weight file's name, size, first and last MiB.

    Content rather than mtimes, so a copied model keeps its caches. `variant` folds in what
    changes the KV values without changing files (e.g. "cpu-float32" when weights are upcast).
    """
    root = Path(model_dir)
    h = hashlib.sha256(b"mlxctl-model-v1\0")
    config = root / "config.json"
    h.update(config.read_bytes() if config.exists() else b"")
    for path in sorted(p for p in root.iterdir() if p.suffix in _WEIGHT_SUFFIXES):
        _hash_file_edges(h, path)
    h.update(variant.encode())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(model_dir: str | os.PathLike, chat_template: str | None = None) -> str:
    """16 hex digits over the tokenizer files and the chat template actually in use."""
    root = Path(model_dir)
    h = hashlib.sha256(b"mlxctl-tokenizer-v1\0")
    for name in _TOKENIZER_FILES:
        path = root / name
        if path.exists():
            h.update(name.encode() + b"\0" + path.read_bytes())
    h.update((chat_template or "").encode())
    return h.hexdigest()[:16]
