"""Release records, the current pointer, the journal and the rollback history (no processes)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from mlxctl.errors import ReleaseError
from mlxctl.releases.record import BUILTIN, COMMAND, Release, launch, new_release_id
from mlxctl.releases.store import ReleaseStore


def make(store: ReleaseStore, kind: str = COMMAND, **fields) -> Release:
    release = Release(
        id=new_release_id() + fields.pop("suffix", ""),
        kind=kind,
        model="demo",
        command="mlx_lm.server --model {model} --host {host} --port {port}",
        **fields,
    )
    return store.create(release)


def test_create_get_list_and_immutable_ids(mlxctl_home):
    store = ReleaseStore()
    first = make(store, note="one", suffix="a")
    second = make(store, note="two", suffix="b")
    assert [r.id for r in store.list()] == [first.id, second.id]
    assert store.get(first.id) == first
    with pytest.raises(ReleaseError, match="already exists"):
        store.create(first)
    with pytest.raises(ReleaseError, match="no release"):
        store.get("r-nope")
    with pytest.raises(ReleaseError, match="invalid release id"):
        store.get("../etc")


def test_a_failed_populate_leaves_no_release(mlxctl_home):
    store = ReleaseStore()
    release = Release(id=new_release_id(), kind=BUILTIN, model="demo", source="src")

    def populate(folder):
        (folder / "src").mkdir()
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.create(release, populate)
    assert store.list() == []
    assert [p.name for p in store.root.iterdir()] == []


def test_current_pointer_only_names_complete_releases(mlxctl_home):
    store = ReleaseStore()
    assert store.current() is None
    release = make(store)
    store.set_current(release.id)
    assert store.current() == release
    with pytest.raises(ReleaseError):
        store.set_current("r-missing")
    assert store.current_id() == release.id
    # A pointer at a folder without its record (e.g. hand-deleted) reads as no current release.
    (store.root / "current").write_text("r-gone\n")
    assert store.current_id() is None


def test_derive_copies_the_base_and_its_source_snapshot(mlxctl_home):
    store = ReleaseStore()

    def snapshot(folder):
        (folder / "src" / "server").mkdir(parents=True)
        (folder / "src" / "server" / "__init__.py").write_text("VERSION = 1\n")

    base = store.create(
        Release(id=new_release_id(), kind=BUILTIN, model="demo", source="src", note="base"),
        snapshot,
    )
    variant = store.derive(base, model="other", args=["--x"])
    assert variant.id != base.id and variant.created >= base.created
    assert (variant.kind, variant.model, variant.args, variant.note) == (
        BUILTIN,
        "other",
        ["--x"],
        "base",
    )
    assert store.get(variant.id) == variant
    copied = store.folder(variant.id) / "src" / "server" / "__init__.py"
    assert copied.read_text() == "VERSION = 1\n"


@pytest.mark.parametrize("damage", ['{"id": "r1", "kind"', "[]", '{"id": "r1"}', "\xff"])
def test_a_damaged_release_json_is_a_release_error(mlxctl_home, damage):
    store = ReleaseStore()
    folder = store.root / "r1"
    folder.mkdir(parents=True)
    (folder / "release.json").write_bytes(damage.encode("latin-1"))
    for read in (lambda: store.get("r1"), store.list):
        with pytest.raises(ReleaseError, match="release r1 is damaged") as caught:
            read()
        assert str(folder) in caught.value.hint


def test_history_is_a_stack_and_rollback_is_idempotent(mlxctl_home):
    store = ReleaseStore()
    a, b, c = (make(store, suffix=s) for s in "abc")
    store.set_current(a.id)
    assert store.previous_id() is None
    store.set_current(b.id, "migrate")
    store.record("migrate", outcome="failed", **{"from": b.id, "to": c.id})
    assert store.previous_id() == a.id
    store.set_current(c.id, "migrate")
    assert store.history() == [a.id, b.id, c.id]
    assert store.previous_id() == b.id
    store.set_current(b.id, "rollback")
    assert store.previous_id() == a.id
    store.set_current(a.id, "rollback")
    assert store.previous_id() is None, "rolling back past the oldest release must be a no-op"
    store.set_current(c.id, "migrate")
    store.set_current(a.id, "rollback")  # a named rollback pops everything above its target
    assert store.history() == [a.id]


def test_history_survives_a_kill_between_pointer_and_journal(mlxctl_home):
    store = ReleaseStore()
    a, b = make(store, suffix="a"), make(store, suffix="b")
    store.set_current(a.id)
    # Killed between writing the pointer and journaling the move:
    (store.root / "current").write_text(b.id + "\n")
    with (store.root / "journal.jsonl").open("a") as handle:
        handle.write('{"torn": ')  # and a torn line for good measure
    assert store.previous_id() == a.id


def test_launch_fills_placeholders_and_puts_snapshots_first(mlxctl_home, tmp_path):
    command = Release(
        id="r1",
        kind=COMMAND,
        model="m",
        args=["--x"],
        env={"A": "1"},
        command="{python} -m mlx_lm server --model {model} --port {port}",
        health_path="/healthz",
    )
    spec = launch(command, None, "127.0.0.1", 9000)
    assert spec.argv == [
        sys.executable,
        "-m",
        "mlx_lm",
        "server",
        "--model",
        "m",
        "--port",
        "9000",
        "--x",
    ]
    assert (spec.env, spec.health_path) == ({"A": "1"}, "/healthz")
    builtin = Release(id="r2", kind=BUILTIN, model="demo", source="src")
    spec = launch(builtin, tmp_path, "127.0.0.1", 9001)
    assert spec.argv[1:] == [
        "-P",
        "-m",
        "server",
        "--model",
        "demo",
        "--host",
        "127.0.0.1",
        "--port",
        "9001",
    ]
    assert spec.env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "src")


def test_launch_gives_a_snapshot_only_the_options_it_accepts(mlxctl_home, tmp_path):
    options = {"cache_ram_bytes": 5, "allowed_hosts": "box.lan", "stop_grace_s": 20.0}
    legacy = Release(id="r3", kind=BUILTIN, model="demo")  # recorded before worker_options
    argv = launch(legacy, None, "127.0.0.1", 9001, **options).argv
    assert "--cache-ram-bytes" in argv and "--allowed-hosts" not in argv
    assert "--stop-grace" not in argv, "an older worker would refuse an unknown flag"
    knows = Release(id="r4", kind=BUILTIN, model="demo", worker_options=["allowed_hosts"])
    argv = launch(knows, None, "127.0.0.1", 9001, **options).argv
    assert argv[-2:] == ["--allowed-hosts", "box.lan"] and "--cache-ram-bytes" not in argv


def test_an_archive_records_every_option_of_its_worker(mlxctl_home):
    from mlxctl.releases.snapshot import archive_installed
    from server.edge.contract import option_names

    release = archive_installed(ReleaseStore(), "demo")
    assert release.worker_options == option_names()
    assert {"cache_dir", "allowed_hosts", "log_file", "stop_grace_s"} <= set(option_names())
    assert ReleaseStore().get(release.id).worker_options == release.worker_options


def test_launch_gives_cache_options_to_our_worker_only(mlxctl_home, tmp_path):
    options = {"cache_dir": tmp_path / "kv", "cache_ram_bytes": 5, "cache_disk_bytes": 0}
    builtin = Release(id="r2", kind=BUILTIN, model="demo", args=["--x"])
    argv = launch(builtin, None, "127.0.0.1", 9001, **options).argv
    assert argv[-7:] == [
        "--cache-dir",
        str(tmp_path / "kv"),
        "--cache-ram-bytes",
        "5",
        "--cache-disk-bytes",
        "0",
        "--x",
    ]
    external = Release(id="r1", kind=COMMAND, model="m", command="srv --port {port}")
    assert launch(external, None, "127.0.0.1", 9000, **options).argv == ["srv", "--port", "9000"]


def test_records_round_trip_through_json(mlxctl_home):
    store = ReleaseStore()
    release = make(store, env={"K": "v"}, features=["openai"])
    data = json.loads((store.folder(release.id) / "release.json").read_text())
    assert Release.from_dict({**data, "added_later": 1}) == release


def test_archive_snapshots_the_worker_alone_with_versions(mlxctl_home):
    from mlxctl.releases.snapshot import archive_installed

    store = ReleaseStore()
    first = archive_installed(store, "demo", "one")
    second = archive_installed(store, "demo", "two")
    src = store.folder(first.id) / "src"
    assert (src / "server" / "__main__.py").is_file()
    assert not (src / "mlxctl").exists(), "the worker imports nothing from mlxctl"
    assert not list(src.rglob("__pycache__"))
    assert set(first.versions) == {"mlxctl", "mlx", "mlx-lm", "python", "source_sha256"}
    assert first.versions["source_sha256"] == second.versions["source_sha256"]
    assert store.current_id() is None, "archiving alone must not move current"


def test_a_release_carries_its_hosts_unless_the_config_names_some(mlxctl_home):
    from mlxctl.releases.snapshot import archive_installed

    layout = {"ranks": 1, "hosts": "10.0.0.1,10.0.0.2", "hostfile": None, "backend": "ring"}
    layout["parallel"] = "tensor"
    release = archive_installed(ReleaseStore(), "demo", distributed=layout)
    assert ReleaseStore().get(release.id).distributed == release.distributed
    argv = launch(release, None, "127.0.0.1", 9001).argv
    assert argv[3:9] == ["server.launch", "--backend", "ring", "--hosts", "10.0.0.1,10.0.0.2", "--"]
    assert argv[argv.index("--parallel") + 1] == "tensor"
    # The config's own layout wins (here: two ranks on this machine, pipeline).
    argv = launch(release, None, "127.0.0.1", 9001, ranks=2, parallel="pipeline").argv
    assert argv[6:8] == ["-n", "2"] and "--hosts" not in argv
    assert argv[argv.index("--parallel") + 1] == "pipeline"
    single = launch(Release(id="r5", kind=BUILTIN, model="demo"), None, "127.0.0.1", 9001).argv
    assert "server.launch" not in single
