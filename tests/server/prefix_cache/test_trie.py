"""Token-level pieces of the prefix cache that need no model: trie, normalisation, disk index."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from server.prefix_cache import disk_index
from server.prefix_cache.trie import TokenTrie
from tests.conftest import REPO_ROOT

# trie


def _brute(stored: dict[tuple, str], query: tuple) -> tuple[int, int]:
    """(longest stored prefix of the query, most tokens any entry shares with it)."""

    def shared(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    prefix = max((len(k) for k in stored if query[: len(k)] == k), default=0)
    best = max((shared(k, query) for k in stored), default=0)
    return prefix, best


def test_trie_matches_brute_force_on_random_sequences():
    rng = np.random.default_rng(1)
    trie, stored = TokenTrie(), {}
    base = [tuple(rng.integers(0, 4, rng.integers(0, 30))) for _ in range(8)]
    for step in range(400):
        seq = base[rng.integers(len(base))] + tuple(rng.integers(0, 4, rng.integers(0, 12)))
        if rng.random() < 0.3 and stored:
            victim = list(stored)[rng.integers(len(stored))]
            assert trie.remove(victim) == stored.pop(victim)
        elif seq:
            trie.insert(seq, f"v{step}")
            stored[seq] = f"v{step}"
        query = base[rng.integers(len(base))] + tuple(rng.integers(0, 4, rng.integers(0, 12)))
        m = trie.search(query)
        want_prefix, want_best = _brute(stored, query)
        assert m.prefix_len == want_prefix
        if m.prefix_value is not None:
            assert stored[query[: m.prefix_len]] == m.prefix_value
        # The extension (if any) shares `shared` tokens, and nothing shares more.
        assert max(m.prefix_len, m.shared if m.extension_value else 0) == want_best
        if m.extension_value is not None:
            (key,) = [k for k, v in stored.items() if v == m.extension_value]
            assert key[: m.shared] == query[: m.shared] and len(key) > m.shared
        assert len(trie) == len(stored)
        assert {tuple(k) for k, _ in trie.items()} == set(stored)


def test_trie_prefixes_of_lists_strict_ancestors():
    trie = TokenTrie()
    trie.insert([1, 2], "a")
    trie.insert([1, 2, 3, 4], "b")
    trie.insert([1, 2, 5], "c")
    assert trie.prefixes_of([1, 2, 3, 4, 5]) == [(2, "a"), (4, "b")]
    assert trie.prefixes_of([1, 2]) == []


def test_trie_search_of_long_prompts_is_fast():
    rng = np.random.default_rng(2)
    system = rng.integers(0, 8000, 20_000)
    trie = TokenTrie()
    for i in range(40):
        trie.insert(np.concatenate([system, rng.integers(0, 8000, 2000 + i)]), i)
    query = np.concatenate([system, rng.integers(0, 8000, 500)])
    t0 = time.perf_counter()
    for _ in range(20):
        m = trie.search(query)
    per_lookup = (time.perf_counter() - t0) / 20
    assert m.shared == 20_000 and m.extension_value is not None
    assert per_lookup < 0.05  # generous: measured ~0.1 ms


# disk index without MLX


def _fake_entry(folder, key, size, last_used):
    name = f"{key}.safetensors"
    (folder / name).write_bytes(b"x" * size)
    return {"file": name, "tokens": size, "bytes": size, "sha256": "", "last_used": last_used}


def test_disk_index_list_clear_prune(tmp_path):
    root = tmp_path / "kv"
    folder = disk_index.ensure_dir(root / "model1")
    now = time.time()
    index = disk_index.empty_index()
    index["entries"] = {
        "old": _fake_entry(folder, "old", 100, now - 7200),
        "new": _fake_entry(folder, "new", 50, now),
    }
    disk_index.write_index(folder, index)
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    rows = disk_index.list_entries(root)
    assert [r["id"] for r in rows] == ["new", "old"] and rows[0]["model"] == "model1"
    assert disk_index.prune(root, 3600, dry_run=True) == 100
    assert (folder / "old.safetensors").exists()
    assert disk_index.prune(root, 3600) == 100
    assert not (folder / "old.safetensors").exists()
    assert disk_index.disk_stats(root) == {
        "model1": {"entries": 1, "bytes": 50, "bytes_written": 0}
    }
    assert disk_index.clear(root) == 50
    assert disk_index.list_entries(root) == []


def test_disk_index_reconcile_drops_missing_and_orphans(tmp_path):
    folder = disk_index.ensure_dir(tmp_path / "m")
    index = disk_index.empty_index()
    index["entries"] = {"gone": {"file": "gone.safetensors", "bytes": 5}}
    (folder / "orphan.safetensors").write_bytes(b"1234")
    (folder / ".tmp-half.safetensors").write_bytes(b"12")
    index = disk_index.reconcile(folder, index)
    assert index["entries"] == {}
    # A young temp file may be another worker's write in progress: left alone until stale.
    assert sorted(p.name for p in folder.iterdir()) == [".tmp-half.safetensors"]
    disk_index.reconcile(folder, index, grace_seconds=0)
    assert sorted(p.name for p in folder.iterdir()) == []


def test_disk_index_corrupt_index_reads_empty(tmp_path, caplog):
    folder = disk_index.ensure_dir(tmp_path / "m")
    (folder / "index.json").write_text("{not json")
    assert disk_index.read_index(folder)["entries"] == {}
    assert "unreadable" in caplog.text


def test_disk_index_and_fingerprint_import_neither_mlx_nor_numpy(tmp_path):
    code = (
        "import sys; from server.prefix_cache import disk_index, fingerprint; "
        f"disk_index.list_entries({str(tmp_path)!r}); "
        "heavy = ('mlx', 'mlx_lm', 'numpy'); "
        "assert not [m for m in sys.modules if m.split('.')[0] in heavy], 'mlx'"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("damage", [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{bad"])
def test_read_safetensors_metadata_rejects_bad_headers(tmp_path, damage):
    path = tmp_path / "f.safetensors"
    path.write_bytes(damage)
    with pytest.raises(ValueError):
        disk_index.read_safetensors_metadata(path)


# fingerprints


def test_fingerprints_follow_content_not_location(tmp_path):
    from server.prefix_cache.fingerprint import model_fingerprint, tokenizer_fingerprint

    a = tmp_path / "a"
    a.mkdir()
    (a / "config.json").write_text('{"hidden_size": 64}')
    (a / "model.safetensors").write_bytes(b"w" * 5000)
    (a / "tokenizer.json").write_text("{}")
    b = tmp_path / "b"
    b.mkdir()
    for p in a.iterdir():
        (b / p.name).write_bytes(p.read_bytes())
    assert model_fingerprint(a) == model_fingerprint(b)  # a copied model keeps its caches
    assert model_fingerprint(a) != model_fingerprint(a, variant="cpu-float32")
    (b / "model.safetensors").write_bytes(b"v" * 5000)
    assert model_fingerprint(a) != model_fingerprint(b)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    assert tokenizer_fingerprint(a, "{{ x }}") != tokenizer_fingerprint(a, "{{ y }}")
