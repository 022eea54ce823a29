"""The RAM tier: KV entries in LRU order under a byte budget, found through a token trie.

One entry per conversation: a new entry replaces the shorter ancestors it supersedes, and one that
a stored trimmable extension already serves is not added. Not thread-safe: the store holds its
lock around every call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.model.kv_state import trimmable

from .entry_format import tokens_key
from .policy import supersedes
from .trie import TokenTrie


@dataclass
class Entry:
    tokens: np.ndarray
    cache: list[Any]
    nbytes: int
    on_disk: bool = False
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.time)
    kind: str = "prompt"  # "system": the shared system+tools checkpoint, kept for new sessions
    trimmable: bool = True
    to_write: list[Any] | None = None  # the write-behind's own copy (see `private_writes`)


class RamTier:
    def __init__(self, budget: int):
        self.budget = budget
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # LRU order, oldest first
        self.trie = TokenTrie()  # tokens -> key
        self.bytes = 0

    def touch(self, key: str, when: float | None = None) -> None:
        """Mark entry `key` used (now, or at `when`) and most recent in LRU order."""
        self.entries[key].last_used = time.time() if when is None else when
        self.entries.move_to_end(key)

    def insert(
        self, tokens: np.ndarray, cache: list[Any], nbytes: int, on_disk: bool, kind: str, **extra
    ) -> bool:
        """Keep `cache` for `tokens` (evicting the least recently used past the budget); True
        when the state is kept, in a new entry or in one that already serves it."""
        key = tokens_key(tokens)
        if key in self.entries:
            entry = self.entries[key]
            entry.kind = "system" if "system" in (kind, entry.kind) else entry.kind
            self.touch(key)
            return True
        # A stored entry that extends this one already serves it (after trimming).
        longer = self.trie.search(tokens)
        extension = longer.extension_value if longer.shared == len(tokens) else None
        if extension is not None and self.entries[extension].trimmable:
            self.touch(extension)
            return True
        can_trim = trimmable(cache)
        entry = Entry(
            tokens, cache, nbytes, on_disk=on_disk, kind=kind, trimmable=can_trim, **extra
        )
        self.entries[key] = entry
        self.trie.insert(tokens, key)
        self.bytes += nbytes
        # One entry per conversation: this one replaces the shorter ancestors it supersedes.
        for _, old in self.trie.prefixes_of(tokens):
            if supersedes(can_trim, self.entries[old].kind):
                self.remove(old)
        while self.bytes > self.budget and len(self.entries) > 1:
            self.remove(next(iter(self.entries)))
        return True

    def remove(self, key: str) -> int:
        """Drop entry `key`; the bytes freed (0 when it was gone)."""
        entry = self.entries.pop(key, None)
        if entry is None:
            return 0
        self.trie.remove(entry.tokens)
        self.bytes -= entry.nbytes
        return entry.nbytes

    def clear(self) -> int:
        freed = self.bytes
        self.entries.clear()
        self.trie = TokenTrie()
        self.bytes = 0
        return freed

    def dirty(self) -> list[Entry]:
        """Entries not on disk yet, most recent first."""
        return [e for e in reversed(self.entries.values()) if not e.on_disk]

    def order_by_use(self) -> None:
        """LRU order from the recorded use times (after a restore kept the files' times)."""
        self.entries = OrderedDict(sorted(self.entries.items(), key=lambda kv: kv[1].last_used))
