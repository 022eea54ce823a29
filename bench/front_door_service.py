"""The front door bench's service and client: a private service, one stream, one request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

CONFIG = """model = "{model}"
port = {port}

[restart]
backoff_initial = 0.2
health_interval = 0.5
stop_timeout = 30.0
"""
PROMPT = [{"role": "user", "content": "Tell me about lighthouses."}]


def default_model() -> Path:
    """The tests' tiny 32K-context model (built once, cached like the tests do)."""
    from server.testing.tiny_model import build_tiny_model

    root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
    return build_tiny_model(root / "tiny-default")


class Service:
    def __init__(self, model: str, home: Path):
        from mlxctl.system.processes import free_port

        self.model = model
        self.env = {**os.environ, "MLXCTL_HOME": str(home)}
        self.env.pop("MLXCTL_WORKER_COMMAND", None)
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(CONFIG.format(model=model, port=free_port()))
        self.port = free_port()

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "mlxctl", *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=900)
        if check and done.returncode != 0:
            raise SystemExit(f"mlxctl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def status(self) -> dict:
        return json.loads(self.ctl("status", "--json", check=False).stdout)  # 3: not running


def stream_once(client: httpx.Client, url: str, model: str, max_tokens: int) -> dict:
    """One greedy stream: time to first token, the gaps between tokens, or the error."""
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True}  # fmt: skip
    began = time.perf_counter()
    stamps: list[float] = []
    try:
        with client.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                return {"began": began, "error": f"HTTP {reply.status_code}"}
            done = False
            for line in reply.iter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"content"' in line:
                    stamps.append(time.perf_counter())
                elif line.startswith("data: ") and '"error"' in line:
                    return {"began": began, "error": line[6:200]}
            if not done:
                return {"began": began, "error": "the stream ended without [DONE]"}
    except httpx.HTTPError as exc:
        return {"began": began, "error": repr(exc)}
    if not stamps:
        return {"began": began, "error": "no tokens"}
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"began": began, "ttft": stamps[0] - began, "gaps": gaps, "end": stamps[-1]}


def one_token(client: httpx.Client, url: str, model: str) -> float:
    body = {"model": model, "messages": PROMPT, "max_tokens": 1, "temperature": 0.0}
    began = time.perf_counter()
    reply = client.post(f"{url}/v1/chat/completions", json=body)
    reply.raise_for_status()
    return time.perf_counter() - began
