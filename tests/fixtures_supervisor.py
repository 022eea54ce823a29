"""Fixtures for tests of the supervisor (owned by the supervisor work).

Carries a fake worker (`FAKE_WORKER_SOURCE`): a stdlib HTTP server that speaks just enough of the
worker's protocol (/health, /v1/status, a slow SSE stream) to exercise the supervisor's process
handling in milliseconds instead of loading a model. Real-worker tests use `make_ctl(real=True)`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The installed console script, exactly what users run.
MLXCTL = str(Path(sys.executable).with_name("mlxctl"))
FAKE_WORKER = "{{python}} {script} --model {{model}} --port {{port}}"
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    if worker == FAKE_WORKER:
        script = tmp_path / "fake_worker.py"
        script.write_text(FAKE_WORKER_SOURCE)
        worker = FAKE_WORKER.format(script=script)
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


# -- the fake worker -----------------------------------------------------------------------------

# A standalone script (no pytest import) so it starts in tens of milliseconds.
FAKE_WORKER_SOURCE = r"""import argparse, json, os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="fake")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()
load = float(os.environ.get("FAKE_WORKER_LOAD_SECONDS", "0.3"))
exit_while_loading = os.environ.get("FAKE_WORKER_EXIT_CODE")
began = time.monotonic()
print(f"fake worker loading {args.model} (pid {os.getpid()})", flush=True)
if os.environ.get("FAKE_WORKER_CHILD"):
    # A grandchild that would outlive a careless stop.
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    subprocess.Popen(sleeper)
    subprocess.Popen(sleeper, start_new_session=True)  # escapes the group: only reaping finds it

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        print(f"{self.command} {self.path} {a[1] if len(a) > 1 else ''}", flush=True)

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        loading = time.monotonic() - began < load
        if self.path == "/health":
            self._send(503 if loading else 200, {"status": "loading" if loading else "ok"})
        elif self.path == "/v1/status":
            self._send(
                200,
                {
                    "model": args.model,
                    "pid": os.getpid(),
                    "backend": "fake",
                    "uptime_seconds": time.monotonic() - began,
                    "memory": {"active_bytes": 1, "peak_bytes": 2, "rss_bytes": 3},
                    "queue_depth": 0,
                    "requests": {},
                    "cache": None,
                },
            )
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        # A slow SSE stream: lets tests kill the worker in the middle of one.
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for index in range(100):
            chunk = f"data: {json.dumps({'index': index})}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            time.sleep(0.1)
        self.wfile.write(b"0\r\n\r\n")

if exit_while_loading:
    time.sleep(load / 2)
    print("fake worker: fatal error while loading", flush=True)
    sys.exit(int(exit_while_loading))
server = ThreadingHTTPServer((args.host, args.port), Handler)
server.daemon_threads = True

def on_term(signum, frame):
    print("fake worker: SIGTERM, shutting down", flush=True)
    threading.Thread(target=server.shutdown, daemon=True).start()

if os.environ.get("FAKE_WORKER_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_term)
print(f"fake worker listening on {args.host}:{args.port}", flush=True)
server.serve_forever()
print("fake worker: bye", flush=True)
"""
