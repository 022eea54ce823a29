"""Prefix KV cache: longest-shared-prefix reuse of KV state, in RAM and on disk.

    seam.py        the PrefixCache protocol the engine calls, NoPrefixCache, tier names
    adapter.py     StoreAdapter: a PrefixStore behind the seam (restore and flush logged)
    factory.py     the worker's cache built from its Settings
    store.py       PrefixStore: lookup and store over the RAM tier, then the disk tier
    ram_tier.py    RamTier: entries in LRU order under a byte budget, through a token trie
    policy.py      which entry serves a prompt (never trimming an untrimmable one), which a
                   new entry replaces (one per conversation, plus the system checkpoint)
    writer.py      WriteBehind: the background thread that puts dirty entries on disk
    disk.py        DiskTier: checksummed safetensors files
    entry_format.py  what an entry's file holds and must have been made with (Compat, keys)
    disk_index.py  the folder layout and index, without MLX (the supervisor CLI imports it)
    trie.py  fingerprint.py  ranks.py (lookups every rank agrees on)

The cache lists themselves (length, trim, snapshot, copies) are `server.model.kv_state`.

Nothing is imported here, so `server.prefix_cache.disk_index` loads neither numpy nor MLX.
"""
