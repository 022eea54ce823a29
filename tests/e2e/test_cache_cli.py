"""`mlxctl cache ...` on real disk-tier files (written by the real PrefixStore), run as a
subprocess; and the worker path of `mlxctl.cache_admin` against a fake worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from server.prefix_cache import disk_index
from tests.fake_worker import FakeWorker

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = 86400


def mlxctl(home: Path, *args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLXCTL_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mlxctl", "cache", *args],
        cwd=REPO_ROOT,
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def as_json(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    pytest.importorskip("mlx.core")
    from server.model.loading import load_model

    return load_model(str(tiny_model_path))


def write_entries(loaded, model_dir, root: Path, lengths=(300, 500)) -> list[dict]:
    """Real KV caches of the tiny model, stored and flushed to the disk tier under `root`."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    from server.prefix_cache.store import PrefixStore

    pc = PrefixStore.for_model(loaded.model, model_dir, disk_root=root, ram_bytes=1 << 30)
    for seed, n in enumerate(lengths):
        # Unrelated prompts (different first token) so neither entry replaces the other.
        tokens = [11 + seed, *np.random.default_rng(seed).integers(20, 8000, n - 1).tolist()]
        cache = make_prompt_cache(loaded.model)
        mx.eval(loaded.model(mx.array(tokens)[None], cache=cache))
        assert pc.store(tokens, cache)
    assert pc.flush() == len(lengths)
    return disk_index.list_entries(root)


@pytest.fixture
def home_with_entries(mlxctl_home, loaded, tiny_model_path):
    root = mlxctl_home / "cache" / "kv"
    entries = write_entries(loaded, tiny_model_path, root)
    assert len(entries) == 2 and all(Path(e["path"]).is_file() for e in entries)
    return mlxctl_home, entries


def test_ls_stats_clear_dry_run_then_yes(home_with_entries):
    home, entries = home_with_entries
    total = sum(e["bytes"] for e in entries)

    table = mlxctl(home, "ls")
    assert table.returncode == 0, table.stderr
    assert "no worker runs" in table.stderr and "RAM tier is empty" in table.stderr
    for e in entries:
        assert str(e["tokens"]) in table.stdout and e["id"][:12] in table.stdout
    listing = as_json(mlxctl(home, "ls", "--json"))
    assert listing["source"] == "disk"
    assert {(e["id"], e["tokens"], e["bytes"]) for e in listing["entries"]} == {
        (e["id"], e["tokens"], e["bytes"]) for e in entries
    }

    stats = as_json(mlxctl(home, "stats", "--json"))
    assert stats["ram"]["entries"] == 0
    assert stats["disk"]["entries"] == 2 and stats["disk"]["bytes"] == total
    assert stats["disk"]["bytes_written_total"] >= total

    dry = as_json(mlxctl(home, "clear", "--dry-run", "--json"))
    assert dry["bytes"] == total and dry["freed_bytes"] == 0
    assert all(Path(e["path"]).is_file() for e in entries)
    assert len(disk_index.list_entries(home / "cache" / "kv")) == 2

    done = mlxctl(home, "clear", "--yes")
    assert done.returncode == 0, done.stderr
    assert "freed" in done.stdout and f"({total} bytes" in done.stdout
    assert not any(Path(e["path"]).exists() for e in entries)
    assert disk_index.list_entries(home / "cache" / "kv") == []
    assert "the cache is empty" in mlxctl(home, "ls").stdout


def test_clear_without_yes_and_without_a_terminal_refuses(home_with_entries):
    home, entries = home_with_entries
    refused = mlxctl(home, "clear")
    assert refused.returncode == 1
    assert "refusing to delete" in refused.stderr and "--yes" in refused.stderr
    assert all(Path(e["path"]).is_file() for e in entries)


def test_prune_by_last_use(home_with_entries):
    home, entries = home_with_entries
    root = home / "cache" / "kv"
    old, young = entries[0], entries[1]
    # The index's last_used is what counts (file times are not); age one entry by 10 days.
    folder = Path(old["path"]).parent
    with disk_index.locked(folder):
        index = disk_index.read_index(folder)
        index["entries"][old["id"]]["last_used"] = time.time() - 10 * DAY
        disk_index.write_index(folder, index)

    dry = as_json(mlxctl(home, "prune", "--older-than", "7d", "--dry-run", "--json"))
    assert dry["entries"] == 1 and dry["bytes"] == old["bytes"] and dry["freed_bytes"] == 0
    assert Path(old["path"]).is_file()

    assert mlxctl(home, "prune", "--older-than", "7d").returncode == 1  # no terminal, no --yes
    done = as_json(mlxctl(home, "prune", "--older-than", "7d", "--yes", "--json"))
    assert done["freed_bytes"] == old["bytes"]
    assert not Path(old["path"]).exists() and Path(young["path"]).is_file()
    assert [e["id"] for e in disk_index.list_entries(root)] == [young["id"]]

    bad = mlxctl(home, "prune", "--older-than", "7x")
    assert bad.returncode == 1 and "duration" in bad.stderr


# -- the worker path, against a fake worker ---------------------------------------------------


@pytest.fixture
def fake_worker(mlxctl_home):
    (mlxctl_home / "config.toml").write_text('api_key = "sekrit"\n')
    FakeWorker.entries = [
        {"tier": "ram", "id": "a", "tokens": 5, "bytes": 100, "last_used": 2.0, "model": "fp"},
        {"tier": "disk", "id": "b", "tokens": 7, "bytes": 300, "last_used": 1.0, "model": "fp"},
    ]
    FakeWorker.has_cache_endpoint = True
    FakeWorker.cache_stats = {"ram": {"entries": 1, "bytes": 10}, "hits": 3}
    FakeWorker.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeWorker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_worker_endpoints_are_used_with_the_api_key(fake_worker):
    from mlxctl import cache_admin

    where = cache_admin.Target(fake_worker, model="tiny", release="r1")
    listing = cache_admin.list_entries(where)
    assert listing.source == "worker" and [e["id"] for e in listing.entries] == ["a", "b"]
    assert listing.entries[0]["release"] == "r1"
    assert cache_admin.stats(where)["hits"] == 3

    plan = cache_admin.plan_clear("ram", where)
    assert plan.bytes == 100 and plan.url == fake_worker
    assert cache_admin.act(plan) == 100
    assert ("DELETE", "/v1/cache?tier=ram", "Bearer sekrit") in FakeWorker.seen
    assert all(auth == "Bearer sekrit" for _, _, auth in FakeWorker.seen)


def test_worker_without_cache_endpoint_falls_back_to_disk_with_a_note(fake_worker):
    from mlxctl import cache_admin

    FakeWorker.has_cache_endpoint = False
    where = cache_admin.Target(fake_worker)
    listing = cache_admin.list_entries(where)
    assert listing.source == "disk" and listing.entries == []
    assert any("no GET" in n and "disk tier" in n for n in listing.notes)
    plan = cache_admin.plan_clear("both", where)
    assert plan.url is None and any("RAM tier cannot be cleared" in n for n in plan.notes)


def test_worker_gone_between_plan_and_act_clears_the_disk_tier(fake_worker):
    from mlxctl import cache_admin

    plan = cache_admin.plan_clear("both", cache_admin.Target(fake_worker))
    assert plan.url == fake_worker
    FakeWorker.has_cache_endpoint = False
    assert cache_admin.act(plan) == 0  # the (empty) disk tier, cleared from its index
    assert any("disk tier" in n for n in plan.notes)


def test_parse_duration():
    from mlxctl.units import parse_duration

    assert parse_duration("7d") == 7 * DAY
    assert parse_duration("1d12h") == 1.5 * DAY
    assert parse_duration("90m") == 5400 and parse_duration("30") == 30
    with pytest.raises(Exception, match="duration"):
        parse_duration("soon")


def test_stats_show_the_write_behind_and_restore_figures():
    from mlxctl.cli.cache_stats_view import life_cycle_lines

    stats = {
        "dirty_entries": 2,
        "write_behind_s": 2.0,
        "bytes_written_behind": 3 << 20,
        "restore": {"mode": "lazy", "seconds": 0.012},
    }
    assert life_cycle_lines(stats) == [
        "write-behind (2s after a change): 2 dirty entries, 3.0 MiB written behind",
        "restore: lazy, last in 0.01s",
    ]
    assert life_cycle_lines({"hits": 1}) == []  # an older worker: nothing made up
