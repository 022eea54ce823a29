"""The disk tier's read-ahead: files read and hashed once, before the model is up, then only
parsed by the lookup or prefetch that wants them."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from server.prefix_cache import disk_index, preread
from server.prefix_cache.fingerprint import model_fingerprint
from server.prefix_cache.preread import ReadAhead, likely_folder
from server.prefix_cache.store import PrefixStore
from tests.server.prefix_cache.store_helpers import cold, rand_tokens

pytest.importorskip("mlx.core")


@pytest.fixture(scope="module")
def model(tiny_model_path):
    from server.model.loading import load_model

    return load_model(str(tiny_model_path)).model


@pytest.fixture(scope="module")
def prompts(model):
    """Three 300-token prompts and their caches."""
    tokens = [rand_tokens(300, 40 + i) for i in range(3)]
    return [(t, cold(model, t)[0]) for t in tokens]


def make(model, root: Path, read_ahead: ReadAhead | None = None, **kw) -> PrefixStore:
    kw.setdefault("ram_bytes", 1 << 30)
    return PrefixStore(
        model,
        model_id="m1",
        tokenizer_id="t1",
        disk_root=root,
        min_disk_gain=1,
        read_ahead=read_ahead,
        **kw,
    )


def saved(model, prompts, root: Path) -> Path:
    """The prompts' entries on disk (the last one most recently used); their folder."""
    pc = make(model, root)
    for tokens, cache in prompts:
        pc.store(tokens, cache)
    assert pc.flush() == len(prompts)
    return root / "m1"


def read_ahead_of(folder: Path, budget: int = 1 << 30) -> ReadAhead:
    return ReadAhead(lambda: folder, budget).start()


@pytest.fixture
def file_reads(monkeypatch) -> list[str]:
    """Names of the KV files read whole (the tier's and the read-ahead's reads)."""
    reads: list[str] = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        if self.suffix == disk_index.SUFFIX:
            reads.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    return reads


def test_a_read_ahead_entry_loads_from_the_bytes_read_before(model, prompts, tmp_path, file_reads):
    folder = saved(model, prompts, tmp_path / "kv")
    ahead = read_ahead_of(folder)
    ahead.wait(30)
    assert ahead.stats()["entries"] == 3 and sorted(file_reads) == sorted(
        e["file"] for e in disk_index.read_index(folder)["entries"].values()
    )
    file_reads.clear()
    restarted = make(model, tmp_path / "kv", ahead)
    tokens = prompts[1][0]
    hit = restarted.lookup(tokens)
    assert (hit.source, hit.cached_tokens) == ("disk", len(tokens) - 1)
    assert file_reads == []  # neither read nor hashed again
    assert restarted.stats()["disk"]["read_ahead"]["used"] == 1


def test_the_prefetch_takes_every_entry_read_ahead_and_frees_the_rest(
    model, prompts, tmp_path, file_reads
):
    folder = saved(model, prompts, tmp_path / "kv")
    one_entry = max(e["bytes"] for e in disk_index.read_index(folder)["entries"].values())
    ahead = read_ahead_of(folder, budget=2 * one_entry)  # the two newest fit
    ahead.wait(30)
    assert ahead.stats()["entries"] == 2
    restarted = make(model, tmp_path / "kv", ahead, ram_bytes=2 * one_entry)
    file_reads.clear()
    assert restarted.restore(mode="lazy") == 2
    assert file_reads == [] and ahead.stats() == {**ahead.stats(), "used": 2, "held_bytes": 0}


def test_a_lookup_racing_the_read_of_its_entry_waits_and_reads_it_once(
    model, prompts, tmp_path, file_reads, monkeypatch
):
    folder = saved(model, prompts, tmp_path / "kv")
    entries = disk_index.read_index(folder)["entries"]
    newest = max(entries, key=lambda k: entries[k]["last_used"])
    reading, release = threading.Event(), threading.Event()
    real = preread._read_verified

    def slow(path: Path, entry: dict) -> bytes | None:
        if path.name == entries[newest]["file"]:
            reading.set()
            release.wait(30)
        return real(path, entry)

    monkeypatch.setattr(preread, "_read_verified", slow)
    ahead = read_ahead_of(folder)
    assert reading.wait(30)
    restarted = make(model, tmp_path / "kv", ahead)
    hits = []
    lookup = threading.Thread(target=lambda: hits.append(restarted.lookup(prompts[2][0])))
    lookup.start()
    lookup.join(0.5)
    assert lookup.is_alive()  # waits for the read in progress
    release.set()
    lookup.join(30)
    assert hits[0].source == "disk"
    assert file_reads.count(entries[newest]["file"]) == 1


def test_an_entry_not_read_yet_is_read_by_the_lookup_and_skipped_by_the_read_ahead(
    model, prompts, tmp_path, file_reads, monkeypatch
):
    folder = saved(model, prompts, tmp_path / "kv")
    entries = disk_index.read_index(folder)["entries"]
    newest = max(entries, key=lambda k: entries[k]["last_used"])
    release = threading.Event()
    real = preread._read_verified

    def held(path: Path, entry: dict) -> bytes | None:
        if path.name == entries[newest]["file"]:
            release.wait(30)  # the newest is read first; the others wait behind it
        return real(path, entry)

    monkeypatch.setattr(preread, "_read_verified", held)
    ahead = read_ahead_of(folder)
    restarted = make(model, tmp_path / "kv", ahead)
    assert restarted.lookup(prompts[0][0]).source == "disk"  # the oldest: not read ahead yet
    release.set()
    ahead.wait(30)
    assert ahead.stats()["entries"] == 2  # the two newest
    assert len(file_reads) == len(set(file_reads)) == 3, file_reads  # each file read once


def test_a_corrupt_file_is_not_read_ahead_and_skipped_as_before(model, prompts, tmp_path, caplog):
    folder = saved(model, prompts[:1], tmp_path / "kv")
    ((entry),) = disk_index.read_index(folder)["entries"].values()
    path = folder / entry["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    ahead = read_ahead_of(folder)
    ahead.wait(30)
    assert ahead.stats()["entries"] == 0
    restarted = make(model, tmp_path / "kv", ahead)
    assert restarted.lookup(prompts[0][0]).source == "miss"
    assert "checksum mismatch" in caplog.text
    assert restarted.disk is not None and restarted.disk.entries() == {} and not path.exists()


def test_an_entry_rewritten_after_its_read_ahead_is_read_again(model, prompts, tmp_path):
    folder = saved(model, prompts[:1], tmp_path / "kv")
    ahead = read_ahead_of(folder)
    ahead.wait(30)
    index = disk_index.read_index(folder)
    ((entry),) = index["entries"].values()
    entry["sha256"] = hashlib.sha256(b"another file").hexdigest()  # as if rewritten since
    disk_index.write_index(folder, index)
    restarted = make(model, tmp_path / "kv", ahead)
    assert restarted.lookup(prompts[0][0]).source == "miss"  # the file now fails its checksum
    assert ahead.stats()["used"] == 0


def test_a_read_ahead_of_another_variants_folder_is_dropped(model, prompts, tmp_path):
    other = saved(model, prompts[:1], tmp_path / "other")
    ahead = read_ahead_of(other)
    ahead.wait(30)
    make(model, tmp_path / "kv", ahead)  # the model loaded with folder m1, not "other"
    assert ahead.stats()["held_bytes"] == 0


def test_the_likely_folder_is_the_variant_with_the_newest_entry(tiny_model_path, tmp_path):
    root = tmp_path / "kv"
    for variant, last_used in (("metal", 10.0), ("cpu-float32", 20.0)):
        folder = disk_index.ensure_dir(root / model_fingerprint(tiny_model_path, variant))
        index = disk_index.empty_index()
        index["entries"]["k"] = {"file": "k.safetensors", "last_used": last_used}
        disk_index.write_index(folder, index)
    assert likely_folder(root, tiny_model_path) == root / model_fingerprint(
        tiny_model_path, "cpu-float32"
    )
    assert likely_folder(tmp_path / "none", tiny_model_path) is None
