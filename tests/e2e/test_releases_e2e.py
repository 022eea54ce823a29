"""Releases end to end: real supervisor, real workers (ours and mlx_lm.server) on the tiny model."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import httpx
import psutil
import pytest

from mlxctl.supervisor.worker_output import SPAWN_MARK
from tests.fixtures_supervisor import FAKE_WORKER_SCRIPT, REPO_ROOT, _make

pytestmark = pytest.mark.slow


@pytest.fixture
def ctl(tmp_path, tiny_model_path):
    """mlxctl on a private home whose current release is an archive of the installed worker."""
    made = _make(tmp_path, "", str(tiny_model_path))
    made.env.pop("MLXCTL_WORKER_COMMAND")  # releases decide what runs
    made.run("release", "archive", "--note", "baseline", check=True)
    made.run("start", check=True)
    yield made
    made.run("stop", "--timeout", "2", timeout=60)


def release_ids(ctl) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(ctl.run("release", "ls", "--json").stdout)}


def current(ctl) -> str:
    return next(i for i, r in release_ids(ctl).items() if r["current"])


def create(ctl, command: str, features: str, note: str) -> str:
    before = set(release_ids(ctl))
    ctl.run(
        "release",
        "create",
        "--command",
        command,
        "--features",
        features,
        "--note",
        note,
        check=True,
    )
    (new,) = set(release_ids(ctl)) - before
    return new


def worker_cmdline(ctl) -> str:
    status, code = ctl.status()
    assert code == 0, status
    return " ".join(psutil.Process(status["worker_pid"]).cmdline())


def worker_spawns(ctl) -> int:
    """Workers the supervisor started so far: its marks in the worker's log."""
    return ctl.worker_log().count(SPAWN_MARK)


def chat_on_main_port(ctl) -> dict:
    status, _ = ctl.status()
    response = httpx.post(
        f"{ctl.url}/v1/chat/completions",
        timeout=60,
        json={
            "model": ctl.model,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "hello"}],
        },
    )
    assert response.status_code == 200, response.text
    return status


def test_migrate_to_mlx_lm_server_then_roll_back(ctl):
    baseline = current(ctl)
    target = create(
        ctl,
        "{python} -m mlx_lm server --model {model} --host {host} --port {port}",
        "openai,stream,tools",
        "mlx_lm.server",
    )
    dry = ctl.run("migrate", "--to", target, "--dry-run")
    assert dry.returncode == 0 and "dry run: nothing changed" in dry.stdout
    assert current(ctl) == baseline

    spawns = worker_spawns(ctl)
    moved = ctl.run("migrate", "--to", target, timeout=300)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    for step in ("preflight", "baseline", "switch"):
        assert f"ok   {step}" in moved.stdout, step
    assert "smoke tests" in moved.stdout and "tool call" in moved.stdout
    assert worker_spawns(ctl) == spawns + 1, "the target's model loads once: the handover's start"
    assert not list((ctl.home / "logs").glob("side-*")), "no side worker, no side log"
    assert current(ctl) == target
    assert "mlx_lm" in worker_cmdline(ctl)
    assert chat_on_main_port(ctl)["release"] == target

    back = ctl.run("rollback", timeout=300)
    assert back.returncode == 0, back.stdout + back.stderr
    assert current(ctl) == baseline
    assert "-m server" in worker_cmdline(ctl)
    assert chat_on_main_port(ctl)["release"] == baseline
    again = ctl.run("rollback")
    assert again.returncode == 0 and "nothing to roll back" in again.stdout


def test_a_release_that_crashes_at_start_rolls_back(ctl):
    baseline = current(ctl)
    worker_before = ctl.status()[0]["worker_pid"]
    target = create(
        ctl, "{python} -c 'import sys; print(\"boom\"); sys.exit(3)'", "openai", "crashes"
    )
    result = ctl.run("migrate", "--to", target, timeout=300)
    assert result.returncode == 1
    assert "FAIL switch" in result.stdout and "exited while starting (code 3)" in result.stdout
    assert "boom" in result.stdout  # its last words, from the worker's log
    assert "previous release" in result.stdout and "restored and healthy" in result.stdout
    assert current(ctl) == baseline
    status = chat_on_main_port(ctl)
    assert status["worker_pid"] == worker_before, "the serving worker must not be touched"
    journal = [
        json.loads(line)
        for line in (ctl.home / "releases" / "journal.jsonl").read_text().splitlines()
    ]
    assert journal[-1]["outcome"] == "failed" and journal[-1]["step"] == "switch"


def test_a_release_whose_tool_call_smoke_test_fails_rolls_back(ctl):
    # Answers health, chat and streams like an OpenAI server, but fails every request with tools.
    command = f"{{python}} {FAKE_WORKER_SCRIPT} --broken-tools --port {{port}}"
    baseline = current(ctl)
    target = create(ctl, command, "openai,stream,tools", "broken tools")
    result = ctl.run("migrate", "--to", target, timeout=300)
    assert result.returncode == 1
    assert "FAIL switch" in result.stdout and "smoke tests failed: tool call" in result.stdout
    assert "tool calling is broken" in result.stdout
    assert current(ctl) == baseline
    chat_on_main_port(ctl)


def test_kill_9_during_a_migration_leaves_a_consistent_state(ctl):
    baseline = current(ctl)
    target = create(
        ctl,
        "{python} -m mlx_lm server --model {model} --host {host} --port {port}",
        "openai,stream",
        "killed",
    )
    spawns = worker_spawns(ctl)
    migrating = ctl.popen(
        "migrate", "--to", target, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ctl.wait_for(lambda: worker_spawns(ctl) > spawns, timeout=60, what="the next worker")
    migrating.send_signal(signal.SIGKILL)
    migrating.wait()

    # The supervisor carries the switch through; `current` names what serves once it does.
    ctl.wait_for(
        lambda: (ctl.state_file().get("switch") or {}).get("ok") is not None,
        timeout=300,
        what="the supervisor's verdict",
    )
    status, code = ctl.status()
    assert code == 0 and status["release"] == current(ctl) == target
    shown = ctl.run("release", "show", check=True)
    assert json.loads(shown.stdout)["id"] == target
    chat_on_main_port(ctl)
    # The next command finds its way: rolling back returns.
    assert ctl.run("rollback", timeout=300).returncode == 0
    assert current(ctl) == baseline


def test_with_no_service_running_migrate_starts_the_target_as_the_service(ctl):
    baseline = current(ctl)
    target = create(
        ctl, f"{{python}} {FAKE_WORKER_SCRIPT} --port {{port}}", "openai,stream", "stopped"
    )
    ctl.run("stop", "--timeout", "2", check=True, timeout=60)
    spawns = worker_spawns(ctl)
    result = ctl.run("migrate", "--to", target, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke tests passed" in result.stdout
    assert worker_spawns(ctl) == spawns + 1
    assert chat_on_main_port(ctl)["release"] == target == current(ctl) != baseline


def test_an_archived_release_runs_after_the_package_changes(tmp_path, tiny_model_path):
    # An "installed" copy of the package that we can upgrade (break) under the archive.
    installed = tmp_path / "installed"
    for package in ("mlxctl", "server"):
        shutil.copytree(
            REPO_ROOT / package, installed / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    made = _make(tmp_path, "", str(tiny_model_path))
    made.env.pop("MLXCTL_WORKER_COMMAND")
    made.env["PYTHONPATH"] = str(installed)
    try:
        made.run("release", "archive", "--note", "good", check=True)
        good = current(made)
        (installed / "server" / "__main__.py").write_text(
            'raise SystemExit("this upgrade is broken")\n'
        )
        made.run("release", "archive", "--no-current", "--note", "broken", check=True)
        broken = next(i for i, r in release_ids(made).items() if r["note"] == "broken")

        made.run("start", check=True)  # runs the archived snapshot, not the broken package
        worker = psutil.Process(made.status()[0]["worker_pid"])
        assert worker.environ()["PYTHONPATH"].startswith(str(made.home / "releases" / good))
        result = made.run("migrate", "--to", broken, timeout=300)
        assert result.returncode == 1
        assert "this upgrade is broken" in result.stdout
        assert current(made) == good
        chat_on_main_port(made)
    finally:
        made.run("stop", "--timeout", "2", timeout=60)


def test_status_names_the_current_release(ctl):
    status, code = ctl.status()
    assert code == 0 and status["release"] == current(ctl)
    assert time.time() - release_ids(ctl)[status["release"]]["created"] < 600
    versions = release_ids(ctl)[status["release"]]["versions"]
    assert set(versions) >= {"mlx", "mlx-lm", "python", "mlxctl"}
