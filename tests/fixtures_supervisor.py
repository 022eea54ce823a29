"""Fixtures for tests of the supervisor (owned by the supervisor work).

Runs the fake worker (`tests/fake_worker.py`), which speaks just enough of the worker's protocol
to exercise the supervisor's process handling in milliseconds instead of loading a model.
Real-worker tests use `make_ctl(real=True)`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlxctl.system.processes import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
# The installed console script, exactly what users run.
MLXCTL = str(Path(sys.executable).with_name("mlxctl"))
FAKE_WORKER_SCRIPT = REPO_ROOT / "tests" / "fake_worker.py"
FAKE_WORKER = f"{{python}} {FAKE_WORKER_SCRIPT} --model {{model}} --port {{port}}"
REAL_WORKER = "{python} -m server --model {model} --host {host} --port {port}"

# Short timings so restart and liveness tests take seconds, not minutes.
FAST_CONFIG = """\
# test config
model = "{model}"
port = {port}

[restart]
backoff_initial = 0.2
backoff_factor = 2.0
backoff_max = 1.0
stable_after = 30.0
max_fast_failures = 3
health_interval = 0.2
liveness_timeout = 1.5
stop_timeout = 3.0

[logs]
max_bytes = {log_max}
backups = 2
"""


class Mlxctl:
    """Runs `mlxctl` as a subprocess against one private home."""

    def __init__(self, home: Path, port: int, env: dict[str, str]):
        self.home = home
        self.port = port
        self.env = env
        self.url = f"http://127.0.0.1:{port}"

    def run(self, *args: str, timeout: float = 120, check: bool = False):
        result = subprocess.run(
            [MLXCTL, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"mlxctl {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            [MLXCTL, *args],
            env=self.env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def status(self) -> tuple[dict, int]:
        result = self.run("status", "--json")
        return json.loads(result.stdout), result.returncode

    def state_file(self) -> dict:
        return json.loads((self.home / "run" / "state.json").read_text())

    def wait_for(self, predicate, timeout: float = 30, every: float = 0.1, what: str = ""):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what or predicate}: last {last!r}")

    def supervisor_log(self) -> str:
        path = self.home / "logs" / "supervisor.log"
        return path.read_text() if path.exists() else ""

    def worker_log(self) -> str:
        path = self.home / "logs" / "worker.log"
        return path.read_text() if path.exists() else ""


def _make(
    tmp_path: Path,
    worker: str,
    model: str,
    extra_env: dict | None = None,
    log_max: int = 1024 * 1024,
) -> Mlxctl:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(FAST_CONFIG.format(model=model, port=port, log_max=log_max))
    env = dict(os.environ)
    env.update(MLXCTL_HOME=str(home), MLXCTL_WORKER_COMMAND=worker, PYTHONPATH=str(REPO_ROOT))
    env.update(extra_env or {})
    env.pop("MLXCTL_NONCE", None)
    ctl = Mlxctl(home, port, env)
    ctl.model = model
    return ctl


def _teardown(ctl: Mlxctl) -> None:
    ctl.run("stop", "--timeout", "2", timeout=60)


@pytest.fixture
def fake_ctl(tmp_path, tiny_model_path):
    """mlxctl with a private home, fast restart settings and the fake worker."""
    ctl = _make(tmp_path, FAKE_WORKER, str(tiny_model_path))
    yield ctl
    _teardown(ctl)


@pytest.fixture
def make_ctl(tmp_path, tiny_model_path):
    """Factory: make_ctl(real=True, env={...}, log_max=...) -> Mlxctl (stopped afterwards)."""
    made = []

    def factory(real: bool = False, env: dict | None = None, log_max: int = 1024 * 1024):
        ctl = _make(
            tmp_path / f"ctl{len(made)}",
            REAL_WORKER if real else FAKE_WORKER,
            str(tiny_model_path),
            env,
            log_max,
        )
        made.append(ctl)
        return ctl

    yield factory
    for ctl in made:
        _teardown(ctl)
