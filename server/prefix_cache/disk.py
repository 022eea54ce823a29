"""Disk tier: KV caches as checksummed safetensors files, one folder per model fingerprint.

A file is loaded only when its size and sha256 match the index and its own metadata names this
model, tokenizer, format and mlx/mlx-lm versions; anything else is skipped with a log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from server.edge.atomic import fsync_dir
from server.model.kv_state import cache_len, evaluate

from . import disk_index as di
from .entry_format import Compat, Named, decode_tokens, encode_tokens, tokens_key
from .policy import supersedes
from .preread import ReadAhead
from .trie import TokenTrie, as_tokens

log = logging.getLogger(__name__)


class DiskTier:
    """One model's folder of KV files with an LRU byte budget. Thread-safe."""

    def __init__(
        self,
        folder: str | os.PathLike,
        compat: Compat,
        max_bytes: int,
        read_ahead: ReadAhead | None = None,
    ):
        self.folder = di.ensure_dir(folder)
        self.compat = compat
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._trie = TokenTrie()  # compatible entries only: tokens -> key
        self._tokens: dict[str, np.ndarray] = {}  # key -> tokens, for removal from the trie
        self._traits: dict[str, tuple[str, bool]] = {}  # key -> (kind, trimmable)
        self.bytes_written = 0  # this process
        self.read_ahead = self._adopt(read_ahead)
        self._open()

    # public

    def search(self, tokens):
        with self._lock:
            return self._trie.search(tokens)

    def candidates(self, tokens) -> list:
        with self._lock:
            return self._trie.candidates(tokens)

    def kind(self, key: str) -> str:
        return self._traits.get(key, ("prompt", True))[0]

    def trimmable(self, key: str) -> bool:
        return self._traits.get(key, ("prompt", True))[1]

    def index(self) -> dict:
        with self._lock:
            return di.read_index(self.folder)

    def stats(self) -> dict:
        index = self.index()
        entries = index["entries"]
        return {
            "entries": len(entries),
            "bytes": sum(e.get("bytes", 0) for e in entries.values()),
            "budget_bytes": self.max_bytes,
            "bytes_written": self.bytes_written,  # by this process
            "bytes_written_total": index.get("bytes_written", 0),  # by this folder's life
            "folder": str(self.folder),
        }

    def entries(self) -> dict[str, dict]:
        return self.index()["entries"]

    def has(self, key: str) -> bool:
        return key in self.entries()

    def load(self, key: str, touch: bool = True) -> tuple[np.ndarray, list[Any]] | None:
        """(tokens, cache) of entry `key`, or None when it is missing, corrupt or incompatible."""
        from mlx_lm.models.cache import load_prompt_cache

        with self._lock:
            entry = di.read_index(self.folder)["entries"].get(key)
            if entry is None:
                self._forget(key)
                return None
            path = self.folder / entry["file"]
            # One read: the bytes are hashed and parsed in memory, never read from disk twice.
            # Bytes read ahead while the model loaded (checked against this entry), else read now.
            ahead = self.read_ahead.take(key, entry) if self.read_ahead is not None else None
            if ahead is not None:
                data, problem, incompatible = self._check_made_here(ahead)
            else:
                data, problem, incompatible = self._verify(path, entry)
            if problem is not None:
                log.warning("kv cache file %s skipped: %s", path.name, problem)
                self._drop(key, incompatible=incompatible)
                return None
            try:
                cache, meta = load_prompt_cache(Named(data, path.name), return_metadata=True)
                evaluate(cache)
                tokens = decode_tokens(meta["tokens"])
            except Exception as e:  # a bad file must never take the worker down
                log.warning("kv cache file %s skipped: unreadable (%s)", path.name, e)
                self._drop(key)
                return None
            if len(tokens) != int(meta.get("token_count", -1)) or cache_len(cache) != len(tokens):
                log.warning("kv cache file %s skipped: token count mismatch", path.name)
                self._drop(key)
                return None
            if touch:
                self.touch(key)
            return tokens, cache

    def save(
        self,
        tokens,
        cache: list[Any],
        nbytes: int,
        last_used: float | None = None,
        traits: dict[str, str] | None = None,
    ) -> bool:
        """Write one entry unless present; False when it does not fit the budget, raises when
        the disk fails (the temp file removed). `traits`:
        kind ("prompt"/"system") and trimmable ("1"/"0"), kept in the file and the index."""
        traits = {"kind": "prompt", "trimmable": "1", **(traits or {})}
        from mlx_lm.models.cache import save_prompt_cache

        tokens = as_tokens(tokens)
        key = tokens_key(tokens)
        last_used = time.time() if last_used is None else last_used
        with self._lock:
            if self.has(key):
                self.touch(key, last_used)
                return True
            if not self._make_room(nbytes, last_used):
                return False
        meta = {
            "format": str(self.compat.format),
            "model": self.compat.model,
            "tokenizer": self.compat.tokenizer,
            "mlx": self.compat.mlx,
            "mlx_lm": self.compat.mlx_lm,
            "token_count": str(len(tokens)),
            "tokens": encode_tokens(tokens),
            "created": str(time.time()),
            **traits,
        }
        name = f"{key}{di.SUFFIX}"
        tmp = self.folder / f"{di.TMP_PREFIX}{key}-{os.getpid()}{di.SUFFIX}"
        try:
            # Written outside the lock: lookups on the request path search the index meanwhile.
            save_prompt_cache(str(tmp), cache, meta)
            os.chmod(tmp, 0o600)  # the prompts' content, like the folder
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            digest, size = di.sha256_file(tmp), tmp.stat().st_size
            # Rename and index together under the lock: another process opening this
            # folder never sees a named file the index does not know yet.
            with self._lock, di.locked(self.folder):
                os.replace(tmp, self.folder / name)
                fsync_dir(self.folder)
                index = di.read_index(self.folder)
                index["entries"][key] = {
                    "file": name,
                    "tokens": len(tokens),
                    "bytes": size,
                    "sha256": digest,
                    "created": float(meta["created"]),
                    "last_used": last_used,
                    **{k: meta[k] for k in ("format", "model", "tokenizer", "mlx", "mlx_lm")},
                    **traits,
                }
                index["bytes_written"] = index.get("bytes_written", 0) + size
                di.write_index(self.folder, index)
        except Exception:  # disk full, read-only home...: the caller's DiskHealth decides
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        with self._lock:
            self.bytes_written += size
            self._remember(tokens, key, traits)
            # One entry per conversation: this one replaces the ancestors it supersedes.
            can_trim = traits["trimmable"] == "1"
            ancestors = [
                k for _, k in self._trie.prefixes_of(tokens) if supersedes(can_trim, self.kind(k))
            ]
            if ancestors:
                self.remove(ancestors)
            return True

    def touch(self, key: str, when: float | None = None) -> None:
        with self._lock, di.locked(self.folder):
            index = di.read_index(self.folder)
            if key in index["entries"]:
                index["entries"][key]["last_used"] = time.time() if when is None else when
                di.write_index(self.folder, index)

    def remove(self, keys: list[str]) -> int:
        with self._lock:
            for key in keys:
                self._forget(key)
            return di.remove_entries(self.folder, keys)

    def clear(self) -> int:
        return self.remove(list(self.entries()))

    def prune(self, older_than_seconds: float, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - older_than_seconds
        old = [k for k, e in self.entries().items() if e.get("last_used", 0.0) < cutoff]
        return self.remove(old)

    def recent_keys(self) -> list[str]:
        """Compatible entries, most recently used first (restore order)."""
        with self._lock:
            entries = di.read_index(self.folder)["entries"]
            live = self._tokens.keys() & entries.keys()
            return sorted(live, key=lambda k: entries[k]["last_used"], reverse=True)

    # internals

    def _open(self) -> None:
        with self._lock, di.locked(self.folder):
            index = di.reconcile(self.folder, di.read_index(self.folder))
            di.write_index(self.folder, index)
            for key, entry in index["entries"].items():
                problem = self.compat.mismatch(entry)
                if problem is not None:
                    log.info("kv cache entry %s not usable here: %s", entry["file"], problem)
                    continue
                # Token ids live in each file's header (read without the tensors), so the
                # index stays small enough to rewrite on every touch.
                try:
                    meta = di.cache_file_metadata(self.folder / entry["file"])
                    self._remember(decode_tokens(meta["tokens"]), key, meta)
                except (OSError, KeyError, ValueError) as e:
                    log.warning("kv cache file %s skipped: bad header (%s)", entry["file"], e)

    def _adopt(self, read_ahead: ReadAhead | None) -> ReadAhead | None:
        """The read-ahead if it read this folder; one of another variant's folder is dropped."""
        if read_ahead is None:
            return None
        folder = read_ahead.folder_for()
        if folder is None or folder.resolve() != self.folder.resolve():
            if folder is not None:
                log.info("kv cache: read-ahead of %s dropped (the model loaded as another)", folder)
            read_ahead.drop()
            return None
        return read_ahead

    def _verify(self, path: Path, entry: dict) -> tuple[bytes, str | None, bool]:
        """(the file's bytes, problem or None, whether the file is sound but made for
        something else)."""
        try:
            if path.stat().st_size != entry.get("bytes"):
                return b"", "truncated or resized", False
            data = path.read_bytes()
            if len(data) != entry.get("bytes"):
                return b"", "truncated or resized", False
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                return b"", "checksum mismatch", False
        except (OSError, ValueError) as e:
            return b"", f"unreadable ({e})", False
        return self._check_made_here(data)

    def _check_made_here(self, data: bytes) -> tuple[bytes, str | None, bool]:
        """`_verify`'s answer for bytes whose size and checksum were checked: their metadata."""
        try:
            meta = di.cache_metadata(di.safetensors_metadata(io.BytesIO(data)))
        except (OSError, ValueError) as e:
            return b"", f"unreadable ({e})", False
        problem = self.compat.mismatch(meta)
        return data, problem, problem is not None

    def _drop(self, key: str, incompatible: bool = False) -> None:
        """Stop offering `key`; delete it unless merely incompatible (a rollback may want it)."""
        self._forget(key)
        if not incompatible:
            di.remove_entries(self.folder, [key])

    def _remember(self, tokens: np.ndarray, key: str, traits: dict) -> None:
        self._tokens[key] = tokens
        self._traits[key] = (traits.get("kind", "prompt"), traits.get("trimmable", "1") == "1")
        self._trie.insert(tokens, key)

    def _forget(self, key: str) -> None:
        tokens = self._tokens.pop(key, None)
        self._traits.pop(key, None)
        if tokens is not None:
            self._trie.remove(tokens)

    def _make_room(self, nbytes: int, last_used: float) -> bool:
        """Evict entries used before `last_used` until `nbytes` more fit."""
        entries = di.read_index(self.folder)["entries"]
        total = sum(e.get("bytes", 0) for e in entries.values())
        if total + nbytes <= self.max_bytes:
            return True
        victims = []
        for key in sorted(entries, key=lambda k: entries[k].get("last_used", 0.0)):
            if total + nbytes <= self.max_bytes or entries[key]["last_used"] >= last_used:
                break
            victims.append(key)
            total -= entries[key].get("bytes", 0)
        if total + nbytes > self.max_bytes:
            return False
        self.remove(victims)
        return True
