"""Files on the prefix cache's disk tier that it must never load: corrupt, truncated, another
model's, another folder's, an old format, another tokenizer or mlx-lm version."""

from __future__ import annotations

import json
import logging
import shutil
import struct

from server.prefix_cache import disk_index
from server.prefix_cache.store import PrefixStore
from tests.server.prefix_cache.store_helpers import make


def _saved(model, base, tmp_path) -> tuple[PrefixStore, dict, object]:
    tokens, cache, _ = base
    pc = make(model, tmp_path)
    pc.store(tokens, cache)
    pc.flush()
    folder = tmp_path / "kv" / "m1"
    ((key, entry),) = disk_index.read_index(folder)["entries"].items()
    return pc, entry, folder / entry["file"]


def _reindex(folder, path):
    """Make the index agree with a file rewritten behind its back (size and checksum)."""
    index = disk_index.read_index(folder)
    for e in index["entries"].values():
        e["bytes"], e["sha256"] = path.stat().st_size, disk_index.sha256_file(path)
    disk_index.write_index(folder, index)


def _rewrite_metadata(path, **changes):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"].update({f"0.{k}": v for k, v in changes.items()})
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_corrupt_file_is_skipped_and_removed(model, base, tmp_path, caplog):
    _, entry, path = _saved(model, base, tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "checksum mismatch" in caplog.text
    assert restarted.disk.entries() == {} and not path.exists()


def test_truncated_file_is_skipped(model, base, tmp_path, caplog):
    pc, _, path = _saved(model, base, tmp_path)
    pc.clear("ram")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    assert pc.lookup(base[0]).source == "miss"  # truncated while the worker ran
    assert "truncated" in caplog.text
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"


def test_truncated_file_with_a_matching_index_is_skipped(model, base, tmp_path, caplog):
    _, _, path = _saved(model, base, tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1000)
    _reindex(path.parent, path)
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "unreadable" in caplog.text


def test_foreign_model_file_is_never_loaded(model, base, tmp_path, caplog):
    _, _, path = _saved(model, base, tmp_path)
    _rewrite_metadata(path, model="someone-else")
    _reindex(path.parent, path)  # the index still claims it is ours
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "model someone-else != m1" in caplog.text
    assert path.exists()  # sound, just not ours: left for its owner


def test_other_model_folder_is_not_offered(model, base, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.prefix_cache")
    _, _, path = _saved(model, base, tmp_path)
    shutil.copytree(path.parent, tmp_path / "kv" / "m2")
    other = PrefixStore(model, model_id="m2", tokenizer_id="t1", disk_root=tmp_path / "kv")
    assert other.lookup(base[0]).source == "miss"
    assert "not usable here: model m1 != m2" in caplog.text


def test_old_format_file_is_skipped(model, base, tmp_path, caplog):
    _, _, path = _saved(model, base, tmp_path)
    _rewrite_metadata(path, format="0")
    _reindex(path.parent, path)
    restarted = make(model, tmp_path)
    assert restarted.lookup(base[0]).source == "miss"
    assert "format 0 != 1" in caplog.text


def test_other_tokenizer_or_mlx_lm_version_is_skipped(model, base, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="server.prefix_cache")
    _, _, path = _saved(model, base, tmp_path)
    retokenized = PrefixStore(model, model_id="m1", tokenizer_id="t2", disk_root=tmp_path / "kv")
    assert retokenized.lookup(base[0]).source == "miss"
    _rewrite_metadata(path, mlx_lm="0.0.1")
    _reindex(path.parent, path)
    assert make(model, tmp_path).lookup(base[0]).source == "miss"
    assert "tokenizer t1 != t2" in caplog.text and "mlx_lm 0.0.1" in caplog.text
