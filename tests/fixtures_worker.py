"""Fixtures for tests of the worker: a real `python -m server` subprocess on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-key"
MAX_BODY = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WorkerHandle:
    process: subprocess.Popen
    port: int
    log_path: Path
    api_key: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait, SIGKILL as a last resort; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_worker(
    model_path,
    *extra_args: str,
    wait: bool = True,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
    api_key: str | None = None,
) -> WorkerHandle:
    """Start `python -m server --model model_path --port <free>`; wait for /health 200."""
    from server.edge.blas import worker_env

    port = free_port()
    fd, log_name = tempfile.mkstemp(prefix=f"worker-{port}-", suffix=".log")
    process = subprocess.Popen(
        worker_command(model_path, port, extra_args, api_key, "worker"),
        cwd=REPO_ROOT,
        env=worker_env(env),
        stdout=fd,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    os.close(fd)  # the child holds its own copy
    handle = WorkerHandle(process, port, Path(log_name), api_key)
    if wait:
        wait_healthy(handle, timeout)
    return handle


def worker_command(model_path, port: int, extra_args, api_key: str | None, name: str) -> list:
    """`python -m server` on `port` with `extra_args`, and a private disk tier unless they
    choose one, and a private store of responses: never the user's $MLXCTL_HOME/cache/kv or
    $MLXCTL_HOME/responses."""
    args = [sys.executable, "-m", "server", "--model", str(model_path), "--port", str(port)]
    if api_key:
        args += ["--api-key", api_key]
    if "--no-cache" not in extra_args and "--cache-dir" not in extra_args:
        args += ["--cache-dir", tempfile.mkdtemp(prefix=f"{name}-{port}-kv-")]
    if "--responses-dir" not in extra_args:
        args += ["--responses-dir", tempfile.mkdtemp(prefix=f"{name}-{port}-responses-")]
    return [*args, *extra_args]


def wait_healthy(handle: WorkerHandle, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.process.poll() is not None:
            raise RuntimeError(f"worker exited with {handle.process.returncode}:\n{handle.log()}")
        try:
            if httpx.get(handle.base_url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    handle.stop()
    raise RuntimeError(f"worker not healthy after {timeout}s:\n{handle.log()}")


@pytest.fixture(scope="session")
def scripted_model_path() -> Path:
    """The tiny model overfit on `server.testing.tiny_model.SCRIPT` (tool-call text, greedy)."""
    from tests.conftest import tiny_model

    return tiny_model(scripted=True)


@pytest.fixture(scope="session")
def worker(scripted_model_path):
    """One worker on the scripted tiny model, shared by the tests of a session."""
    handle = start_worker(
        scripted_model_path,
        "--max-output-tokens",
        "64",
        "--max-queue",
        "2",
        "--max-body-bytes",
        str(MAX_BODY),
        "--no-cache",  # these tests check prompts and replies, not reuse (test_worker_cache.py)
        api_key=API_KEY,
    )
    yield handle
    handle.stop()
    if os.environ.get("MLXCTL_SHOW_WORKER_LOG"):
        print(handle.log())


@pytest.fixture
def openai_client(worker):
    from openai import OpenAI

    with OpenAI(base_url=worker.base_url + "/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def anthropic_client(worker):
    from anthropic import Anthropic

    with Anthropic(base_url=worker.base_url, api_key=API_KEY, max_retries=0) as client:
        yield client
