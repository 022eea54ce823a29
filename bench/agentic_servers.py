"""The agentic bench's servers: our worker (alone or under mlxctl) and mlx_lm.server as
subprocesses, each in its own process group, and the tiny test model they serve by default."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def mlx_lm_argv(model: str, port: int, max_tokens: int) -> list[str]:
    """mlx_lm.server from the same mlx-lm, on `port`, replies capped at `max_tokens`."""
    argv = [sys.executable, "-m", "mlx_lm", "server", "--model", model, "--port", str(port)]
    return [*argv, "--max-tokens", str(max_tokens)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict, log_dir: Path):
        self.name, self.argv, self.port, self.env = name, argv, port, env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float) -> float:
        """Start and wait for /health 200; returns the seconds it took."""
        t0 = time.perf_counter()
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        self.process = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2, trust_env=False).status_code == 200:
                    return time.perf_counter() - t0
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f}s; see {self.log_path}")

    def stop(self, grace: float = 120.0) -> None:
        """SIGTERM the group (our worker flushes its cache then), SIGKILL after `grace`."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


class Supervised(Server):
    """Our worker under `mlxctl` (its own home): start and stop through the CLI, and a kill -9
    of the worker that the supervisor restarts by itself."""

    def __init__(self, model: str, port: int, env: dict, log_dir: Path):
        super().__init__("ours", [], port, env, log_dir)
        self.model, self.up = model, False

    def mlxctl(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "mlxctl", *args]
        return subprocess.run(
            argv, env=self.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
        )

    def start(self, timeout: float) -> float:
        t0 = time.perf_counter()
        args = ("start", "--model", self.model, "--port", str(self.port))
        done = self.mlxctl(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"mlxctl start failed: {done.stderr.strip()[-400:]}")
        self.up = True
        return time.perf_counter() - t0

    def stop(self, grace: float = 120.0) -> None:
        if self.up:
            self.mlxctl("stop", timeout=grace)
            self.up = False

    def kill_worker(self, timeout: float) -> float:
        """kill -9 the worker; the seconds until the supervisor has a new one healthy."""
        t0 = time.perf_counter()
        pid = json.loads(self.mlxctl("status", "--json").stdout)["worker_pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = json.loads(self.mlxctl("status", "--json").stdout)
            if state["state"] == "RUNNING" and state["worker_pid"] not in (None, pid):
                with contextlib.suppress(httpx.HTTPError):
                    r = httpx.get(self.url + "/health", timeout=2, trust_env=False)
                    if r.status_code == 200:
                        return time.perf_counter() - t0
            time.sleep(0.1)
        raise RuntimeError(f"the supervisor did not bring the worker back in {timeout:.0f}s")


def default_model() -> Path:
    """The tests' tiny 32K-context model (built once, cached like the tests do)."""
    from server.testing.tiny_model import build_tiny_model

    root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
    return build_tiny_model(root / "tiny-default")
