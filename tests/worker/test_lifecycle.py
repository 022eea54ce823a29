"""Worker process life: refuses unsafe binds, 503 while loading, SIGTERM ends streams properly."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys

import httpx

from tests.fixtures_worker import REPO_ROOT, start_worker, wait_healthy


def test_refuses_non_loopback_bind_without_key(tiny_model_path):
    from server.edge.blas import worker_env

    env = worker_env()
    env.pop("MLXCTL_API_KEY", None)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "--model",
            str(tiny_model_path),
            "--host",
            "0.0.0.0",
            "--port",
            "1",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "API key" in r.stderr


def test_loading_then_ready_then_sigterm_ends_stream_cleanly():
    from tests.conftest import tiny_model

    handle = start_worker(tiny_model(layers=1), wait=False)
    try:
        first = None
        while first is None and handle.process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                first = httpx.get(handle.base_url + "/health", timeout=2)
        # The HTTP server is up before the model: health says so with a 503.
        assert first.status_code == 503 and first.json()["status"] == "loading"
        wait_healthy(handle)
        body = {
            "model": "claude-x",
            "max_tokens": 300,
            "stream": True,
            "messages": [{"role": "user", "content": "Tell me everything."}],
        }
        events = []
        with httpx.stream("POST", handle.base_url + "/v1/messages", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                    if events.count("content_block_delta") == 2:
                        handle.process.send_signal(signal.SIGTERM)
        # Either finished within the grace period or ended with an error event; never cut off.
        assert events[-1] in ("message_stop", "error"), events[-5:]
        assert handle.process.wait(30) == 0
        assert "worker stopped" in handle.log()
    finally:
        handle.stop()


def test_the_worker_fits_its_stop_into_the_grace_the_supervisor_passes():
    from server.edge.contract import worker_argv
    from server.flags import parse_args
    from server.settings import Settings, stop_budget

    argv = worker_argv("m", "127.0.0.1", 8080, stop_grace_s=30)
    assert parse_args(argv[4:]).stop_grace == 30.0
    for grace in (3.0, 15.0, 30.0):
        request, flush = stop_budget(Settings("m", "m", stop_grace_s=grace))
        # Request grace, cache flush and a second for the rest of the exit, before SIGKILL.
        assert request > 0 and flush > 0 and request + flush + 1 <= grace
