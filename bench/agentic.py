"""Agentic-session benchmark: our worker vs mlx_lm.server on a Claude-Code-shaped session.

    uv run python bench/agentic.py [--model PATH] [--turns 10] [--quick] [--fixtures DIR]
    uv run mlxctl bench ...                      (the same)

The session is the real system prompt and tools of a captured Claude Code request (read from the
fixtures at run time), then turns that each add an assistant tool_use, a user tool_result of a
few hundred tokens of generated text, and ask for a short greedy reply. Both servers get the same
conversation (ours over the Anthropic API, mlx_lm.server over OpenAI chat). Both servers run at
once and take each step in turn, so both see the same load on a shared machine:

  session 1, turns 0..N on a fresh server (turn 0 is the cold first request);
  restart the server, then turn N+1 (the first request after a restart);
  kill -9 the server (after --settle seconds) and start it again, then turn N+2;
  session 2: a new first request whose billing-header value differs.

A second table gives the life cycle in wall seconds (stop or kill + start + TTFT: restart and
crash to first token, against a cold start) and the RAM our cache holds after the session
against one entry's size.

Time to first token (TTFT) is measured on the client per request. The default model is the tiny
random-weight 32K-context test model; its cold ~20K-token prefill takes about a minute on 2 CPU
cores, so the full run takes a while without a working cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script: `mlxctl` and `server` come from the checkout

DEFAULT_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "claude-code-2.1.328"
FIXTURE_FILE = "fix-notes-session/001.json"
BILLING_PREFIX = "x-anthropic-billing-header:"
# Targets of issue 5 (ratios of time to first token).
FOLLOW_UP_VS_COLD = 20.0
RESTART_VS_COLD = 10.0
SESSION2_VS_MLX_LM = 10.0
NO_WORSE_SLACK = 1.10  # "no worse than mlx_lm.server" allows 10% timing noise per turn


# -- the conversation --------------------------------------------------------------------------


@dataclass
class Session:
    system: list[dict]
    tools: list[dict]
    first_user: dict
    turns: list[tuple[dict, dict]]  # (assistant tool_use message, user tool_result message)

    def anthropic_messages(self, turn: int) -> list[dict]:
        """Messages of request `turn` (0 = the first user message alone)."""
        messages = [self.first_user]
        for assistant, user in self.turns[:turn]:
            messages += [assistant, user]
        messages = json.loads(json.dumps(messages))
        # Claude Code marks the newest user block for caching; the marker moves every turn.
        messages[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
        return messages


def load_fixture(fixtures: Path) -> dict:
    path = fixtures / FIXTURE_FILE if fixtures.is_dir() else fixtures
    if not path.is_file():
        sys.exit(f"fixture not found: {path} (give --fixtures DIR)")
    body = json.loads(path.read_text())
    return body.get("body", body)


def _tool_result_text(rng: random.Random, turn: int, lines: int) -> tuple[str, str, dict]:
    """(tool name, result text, tool input): a directory listing or a source file, by turn."""
    words = ["cache", "server", "worker", "config", "stream", "token", "prompt", "model", "tool"]
    if turn % 2:
        folder = f"src/{rng.choice(words)}_{turn}"
        rows = [f"total {lines * 8}"]
        for i in range(lines):
            name = f"{rng.choice(words)}_{rng.choice(words)}_{i}.py"
            size = rng.randint(120, 48000)
            rows.append(
                f"-rw-r--r--  1 dev dev {size:>6} Nov {rng.randint(1, 28):>2} "
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} {name}"
            )
        return "Bash", "\n".join(rows), {"command": f"ls -la {folder}", "description": "List"}
    path = f"/home/dev/project/src/{rng.choice(words)}_{turn}.py"
    rows = []
    for i in range(lines):
        a, b = rng.choice(words), rng.choice(words)
        kind = i % 4
        if kind == 0:
            rows.append(f"def {a}_{b}_{i}(self, {b}: int = {rng.randint(0, 99)}) -> str:")
        elif kind == 1:
            rows.append(f'    """Return the {a} of the {b} for step {i}."""')
        elif kind == 2:
            rows.append(f"    value = self.{a}.get({b!r}, {rng.randint(0, 9)}) + {b}")
        else:
            rows.append(f"    return f'{{value}}-{a}-{i}'")
    text = "\n".join(f"{n + 1:>5}\t{row}" for n, row in enumerate(rows))
    return "Read", text, {"file_path": path}


def build_session(body: dict, turns: int, result_lines: int, quick: bool) -> Session:
    system = json.loads(json.dumps(body["system"]))
    tools = body["tools"]
    if quick:
        # Smaller prompt so a quick run finishes in minutes: a cut system text, few tools.
        for block in system:
            if len(block.get("text", "")) > 4000:
                block["text"] = block["text"][:4000]
        keep = {"Read", "Edit", "Write"}
        tools = [t for t in tools if t["name"] in keep]
    first_user = json.loads(json.dumps(body["messages"][0]))
    rng = random.Random(1234)
    steps = []
    for turn in range(1, turns + 1):
        name, text, tool_input = _tool_result_text(rng, turn, result_lines)
        tool_id = f"toolu_bench_{turn:02d}"
        assistant = {
            "role": "assistant",
            "content": [
                {"type": "text", "text": f"Step {turn}: let me look at that."},
                {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input},
            ],
        }
        user = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": text}],
        }
        steps.append((assistant, user))
    return Session(system, tools, first_user, steps)


def second_session(session: Session) -> Session:
    """The same project in a new Claude Code session: another billing-header value."""
    system = json.loads(json.dumps(session.system))
    for block in system:
        text = block.get("text", "")
        if text.startswith(BILLING_PREFIX):
            block["text"] = re.sub(r"cc_version=[^;]*", "cc_version=2.1.328.9f7", text)
    first = json.loads(json.dumps(session.first_user))
    first["content"][-1]["text"] += "\nAlso check the tests."
    return Session(system, session.tools, first, session.turns)


def to_openai(session: Session, turn: int) -> tuple[list[dict], list[dict]]:
    """The same request as OpenAI chat messages and function tools."""
    system = "\n".join(b["text"] for b in session.system if b.get("type") == "text")
    messages: list[dict] = [{"role": "system", "content": system}]
    for m in session.anthropic_messages(turn):
        blocks = (
            m["content"]
            if isinstance(m["content"], list)
            else [{"type": "text", "text": m["content"]}]
        )
        text = "\n".join(b["text"] for b in blocks if b["type"] == "text")
        if m["role"] == "assistant":
            calls = [
                {
                    "id": b["id"],
                    "type": "function",
                    "function": {"name": b["name"], "arguments": json.dumps(b["input"])},
                }
                for b in blocks
                if b["type"] == "tool_use"
            ]
            msg = {"role": "assistant", "content": text}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            continue
        for b in blocks:
            if b["type"] == "tool_result":
                content = b["content"]
                if isinstance(content, list):
                    content = "\n".join(c.get("text", "") for c in content)
                messages.append(
                    {"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}
                )
        if text:
            messages.append({"role": "user", "content": text})
    tools = [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t.get("input_schema", {"type": "object"}),
            },
        }
        for t in session.tools
    ]
    return messages, tools


# -- servers -----------------------------------------------------------------------------------


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


# -- one request -------------------------------------------------------------------------------


@dataclass
class Sample:
    label: str
    ttft: float | None = None
    total: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    text: str = ""
    error: str | None = None


def _sse(response: httpx.Response):
    for line in response.iter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                return
            with contextlib.suppress(ValueError):
                yield json.loads(data)


def anthropic_request(url: str, session: Session, turn: int, args, label: str) -> Sample:
    """Stream /v1/messages; TTFT = first content_block_delta (or message_delta if none)."""
    body = {
        "model": "claude-sonnet-4-5",
        "system": session.system,
        "tools": session.tools,
        "messages": session.anthropic_messages(turn),
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
    }
    sample = Sample(label)
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "bench"}
    t0 = time.perf_counter()
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/messages",
            json=body,
            headers=headers,
            timeout=args.request_timeout,
            trust_env=False,
        ) as response:
            if response.status_code != 200:
                response.read()
                sample.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return sample
            for event in _sse(response):
                kind = event.get("type")
                if kind == "message_start":
                    usage = event.get("message", {}).get("usage", {})
                    _anthropic_usage(sample, usage)
                elif kind == "content_block_delta":
                    if sample.ttft is None:
                        sample.ttft = time.perf_counter() - t0
                    delta = event.get("delta", {})
                    sample.text += delta.get("text", "") or delta.get("partial_json", "")
                elif kind == "message_delta":
                    if sample.ttft is None:
                        sample.ttft = time.perf_counter() - t0
                    _anthropic_usage(sample, event.get("usage") or {})
                elif kind == "error":
                    sample.error = json.dumps(event.get("error"))[:200]
    except httpx.HTTPError as exc:
        sample.error = f"{exc.__class__.__name__}: {exc}"
    sample.total = time.perf_counter() - t0
    return sample


def _anthropic_usage(sample: Sample, usage: dict) -> None:
    read = usage.get("cache_read_input_tokens")
    if isinstance(read, int):
        sample.cached_tokens = read
    parts = [
        usage.get(k)
        for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    ]
    if isinstance(usage.get("input_tokens"), int):
        sample.prompt_tokens = sum(p for p in parts if isinstance(p, int))


def openai_stream_body(session: Session, turn: int, max_tokens: int) -> dict:
    """The greedy streamed /v1/chat/completions body of `session`'s turn (usage included)."""
    messages, tools = to_openai(session, turn)
    return {
        "model": "default_model",
        "messages": messages,
        "tools": tools,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def openai_request(url: str, session: Session, turn: int, args, label: str) -> Sample:
    """Stream /v1/chat/completions; TTFT = first chunk with content (else the first chunk)."""
    body = openai_stream_body(session, turn, args.max_tokens)
    sample = Sample(label)
    first_any = None
    t0 = time.perf_counter()
    try:
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=body,
            timeout=args.request_timeout,
            trust_env=False,
        ) as response:
            if response.status_code != 200:
                response.read()
                sample.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return sample
            for chunk in _sse(response):
                now = time.perf_counter() - t0
                first_any = first_any if first_any is not None else now
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    piece = delta.get("content") or delta.get("reasoning") or ""
                    if piece or delta.get("tool_calls"):
                        sample.ttft = sample.ttft if sample.ttft is not None else now
                        sample.text += piece
                usage = chunk.get("usage")
                if usage:
                    sample.prompt_tokens = usage.get("prompt_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    sample.cached_tokens = details.get("cached_tokens")
    except httpx.HTTPError as exc:
        sample.error = f"{exc.__class__.__name__}: {exc}"
    sample.total = time.perf_counter() - t0
    if sample.ttft is None:
        sample.ttft = first_any
    return sample


# -- one server's run --------------------------------------------------------------------------


@dataclass
class Run:
    name: str
    samples: list[Sample] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)
    error: str | None = None
    # Wall seconds of the life-cycle steps and the RAM figures after the session (ours only).
    life: dict = field(default_factory=dict)


def run_interleaved(contenders, session: Session, args, say) -> list[Run]:
    """Run every step on each server in turn, all servers up at once, so both see the same
    machine load (this 2-core machine is shared; sequential runs compared different loads).

    `contenders` is a list of (name, make_server, request)."""
    runs = {name: Run(name) for name, _, _ in contenders}
    servers = {name: make() for name, make, _ in contenders}
    s2 = second_session(session)

    def start(name: str) -> None:
        runs[name].startup.append(servers[name].start(args.startup_timeout))
        say(f"{name}: up in {runs[name].startup[-1]:.1f}s at {servers[name].url}")

    def step(turn_session: Session, turn: int, label: str) -> None:
        for name, _, request in contenders:
            if runs[name].error:
                continue
            try:
                sample = request(servers[name].url, turn_session, turn, args, label)
            except RuntimeError as exc:
                runs[name].error = str(exc)
                say(f"{name}: {exc}")
                continue
            runs[name].samples.append(_report(say, name, sample))

    def bounce(name: str, kill: bool) -> float:
        """Stop (SIGTERM and its grace, or kill -9) and start again; the wall seconds."""
        t0 = time.perf_counter()
        if kill and isinstance(servers[name], Supervised):
            seconds = servers[name].kill_worker(args.startup_timeout)
            say(f"{name}: worker killed (-9), back under mlxctl in {seconds:.1f}s")
            return seconds
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(servers[name].process.pid, signal.SIGKILL)
            servers[name].process.wait(10)
        else:
            servers[name].stop()
        stopped = time.perf_counter() - t0
        say(f"{name}: {'killed (-9)' if kill else 'stopped'} in {stopped:.1f}s, starting again")
        start(name)
        return time.perf_counter() - t0

    try:
        for name in servers:
            try:
                start(name)
            except RuntimeError as exc:
                runs[name].error = str(exc)
                say(f"{name}: {exc}")
        for turn in range(args.turns + 1):
            step(session, turn, "0 (cold)" if turn == 0 else str(turn))
        if "ours" in servers and not runs["ours"].error:
            runs["ours"].life.update(ram_held(servers["ours"].url))
        restart, crash = f"{args.turns + 1} (restart)", f"{args.turns + 2} (kill -9)"
        for label, kill in ((restart, False), (crash, True)):
            if kill:
                time.sleep(args.settle)  # a crash after the write-behind window has passed
            for name in servers:
                if not runs[name].error:
                    try:
                        runs[name].life[f"bounce {label}"] = bounce(name, kill)
                    except RuntimeError as exc:
                        runs[name].error = str(exc)
                        say(f"{name}: {exc}")
            step(session, args.turns + (2 if kill else 1), label)
        step(s2, 0, "session 2")
    finally:
        for server in servers.values():
            server.stop()
    return [runs[name] for name, _, _ in contenders]


def ram_held(url: str) -> dict:
    """RAM bytes the worker's cache holds after the session, and its largest entry's."""
    try:
        stats = httpx.get(url + "/v1/status", timeout=10, trust_env=False).json()["cache"]
        entries = httpx.get(url + "/v1/cache", timeout=10, trust_env=False).json()["entries"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return {}
    ram = [e["bytes"] for e in entries if e.get("tier") == "ram"]
    return {"ram_bytes": stats["ram"]["bytes"], "ram_entries": len(ram), "entry_bytes": max(ram)}


def life_rows(run: Run | None, turns: int) -> dict[str, float | None]:
    """Wall seconds to the first token: cold start, after a restart, after a kill -9."""
    if run is None:
        return {}
    life = run.life
    restart, crash = f"{turns + 1} (restart)", f"{turns + 2} (kill -9)"

    def total(bounce: float | None, label: str) -> float | None:
        ttft = _ttft(run, label)
        return None if bounce is None or ttft is None else bounce + ttft

    return {
        "cold start to first token": total(run.startup[0] if run.startup else None, "0 (cold)"),
        "restart to first token": total(life.get(f"bounce {restart}"), restart),
        "kill -9 to first token": total(life.get(f"bounce {crash}"), crash),
    }


def print_life(console, ours: Run | None, mlx: Run | None, turns: int) -> None:
    from rich.table import Table

    table = Table(title="life cycle (wall seconds; stop/kill + start + time to first token)")
    for col in ("row", "ours", "mlx_lm.server", "target (ours)"):
        table.add_column(col, justify="right")
    a, b = life_rows(ours, turns), life_rows(mlx, turns)
    load = ours.startup[0] if ours and ours.startup else None
    follow = [t for i in range(1, turns + 1) if (t := _ttft(ours, str(i))) is not None]
    bound = load + 2 + statistics.median(follow) if load and follow else None
    for row in a or b:
        target = ""
        if row != "cold start to first token" and bound is not None and a.get(row) is not None:
            met = "met" if a[row] <= bound else "MISSED"
            target = f"<= {bound:.2f} (load + 2 s + follow-up): {met}"
        table.add_row(row, _fmt(a.get(row), ""), _fmt(b.get(row), ""), target)
    life = ours.life if ours else {}
    if life.get("entry_bytes"):
        ratio = life["ram_bytes"] / life["entry_bytes"]
        table.add_row(
            "RAM held after the session / one entry",
            f"{ratio:.2f}x ({life['ram_entries']} entries)",
            "-",
            f"<= 1.3x: {'met' if ratio <= 1.3 else 'MISSED'}",
        )
    console.print(table)


def _report(say, name: str, s: Sample) -> Sample:
    ttft = f"{s.ttft:.2f}s" if s.ttft is not None else "-"
    say(
        f"{name} turn {s.label}: ttft {ttft}, prompt {s.prompt_tokens}, cached {s.cached_tokens}"
        + (f", ERROR {s.error}" if s.error else "")
    )
    return s


# -- report ------------------------------------------------------------------------------------


def _ttft(run: Run | None, label: str) -> float | None:
    if run is None:
        return None
    for s in run.samples:
        if s.label == label and s.error is None:
            return s.ttft
    return None


def _fmt(x: float | None, unit: str = "s") -> str:
    return "-" if x is None else f"{x:.2f}{unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def targets(ours: Run | None, mlx: Run | None, turns: int) -> list[tuple[str, str, bool | None]]:
    """(description, measured, met) for the four targets; met None when not measurable."""
    out = []
    cold = _ttft(ours, "0 (cold)")
    follow = [t for i in range(1, turns + 1) if (t := _ttft(ours, str(i))) is not None]
    median = statistics.median(follow) if follow else None
    r = _ratio(cold, median)
    out.append(
        (
            f"follow-up turn >= {FOLLOW_UP_VS_COLD:g}x faster than the cold first turn",
            f"{_fmt(r, 'x')} (cold {_fmt(cold)}, median follow-up {_fmt(median)})",
            None if r is None else r >= FOLLOW_UP_VS_COLD,
        )
    )
    restart = _ttft(ours, f"{turns + 1} (restart)")
    r = _ratio(cold, restart)
    out.append(
        (
            f"first request after a restart >= {RESTART_VS_COLD:g}x faster than cold",
            f"{_fmt(r, 'x')} (restart {_fmt(restart)})",
            None if r is None else r >= RESTART_VS_COLD,
        )
    )
    labels = [s.label for s in ours.samples] if ours else []
    pairs = [(lbl, _ttft(ours, lbl), _ttft(mlx, lbl)) for lbl in labels]
    pairs = [(lbl, a, b) for lbl, a, b in pairs if a is not None and b is not None]
    worse = [lbl for lbl, a, b in pairs if a > b * NO_WORSE_SLACK]
    out.append(
        (
            "per-turn time no worse than mlx_lm.server's (10% slack)",
            f"{len(pairs) - len(worse)}/{len(pairs)} turns"
            + (f"; worse: {', '.join(worse)}" if worse else ""),
            None if not pairs else not worse,
        )
    )
    r = _ratio(_ttft(mlx, "session 2"), _ttft(ours, "session 2"))
    out.append(
        (
            f"second session >= {SESSION2_VS_MLX_LM:g}x faster than mlx_lm.server's",
            f"{_fmt(r, 'x')} (ours {_fmt(_ttft(ours, 'session 2'))}, "
            f"mlx_lm {_fmt(_ttft(mlx, 'session 2'))})",
            None if r is None else r >= SESSION2_VS_MLX_LM,
        )
    )
    return out


def print_report(console, ours: Run | None, mlx: Run | None, args) -> None:
    from rich.table import Table

    table = Table(title="time to first token per request (seconds)")
    for col in (
        "turn",
        "ours",
        "ours cached/prompt",
        "mlx_lm.server",
        "mlx_lm cached/prompt",
        "mlx_lm / ours",
        "ours cold / this",
    ):
        table.add_column(col, justify="right")
    labels = [s.label for s in (ours or mlx).samples] if (ours or mlx) else []
    cold = _ttft(ours, "0 (cold)")

    def sample(run, label):
        return next((s for s in run.samples if s.label == label), None) if run else None

    for label in labels:
        a, b = sample(ours, label), sample(mlx, label)
        table.add_row(
            label,
            _cell(a),
            _tokens(a),
            _cell(b),
            _tokens(b),
            _fmt(_ratio(_ttft(mlx, label), _ttft(ours, label)), "x"),
            "" if label == "0 (cold)" else _fmt(_ratio(cold, _ttft(ours, label)), "x"),
        )
    console.print(table)
    print_life(console, ours, mlx, args.turns)
    for run in (ours, mlx):
        if run and run.error:
            console.print(f"[red]{run.name} failed:[/] {run.error}")
    for text, measured, met in targets(ours, mlx, args.turns):
        mark = {True: "[green]met[/]", False: "[red]MISSED[/]", None: "[yellow]n/a[/]"}[met]
        console.print(f"{mark:>18}  {text}: {measured}")


def _cell(s: Sample | None) -> str:
    if s is None:
        return "-"
    return "error" if s.error else _fmt(s.ttft, "")


def _tokens(s: Sample | None) -> str:
    if s is None or s.prompt_tokens is None:
        return "-"
    return f"{s.cached_tokens if s.cached_tokens is not None else '?'}/{s.prompt_tokens}"


# -- main --------------------------------------------------------------------------------------


def default_model() -> Path:
    """The tests' tiny 32K-context model (built once, cached like the tests do)."""
    from server.testing.tiny_model import build_tiny_model

    root = Path(os.environ.get("MLXCTL_TEST_CACHE", Path.home() / ".cache" / "mlxctl-tests"))
    return build_tiny_model(root / "tiny-default")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/agentic.py",
        description="Replay a Claude-Code-shaped session against our worker and mlx_lm.server "
        "(same model, one after the other) and print time to first token per turn, the ratios "
        "and the targets of the prefix cache.",
    )
    p.add_argument("--model", help="MLX model directory (default: the tiny 32K test model)")
    p.add_argument(
        "--fixtures",
        type=Path,
        default=DEFAULT_FIXTURES,
        help=f"captured Claude Code requests (default {DEFAULT_FIXTURES})",
    )
    p.add_argument(
        "--turns",
        type=int,
        default=None,
        help="follow-up turns after the first request (default 10; 3 with --quick)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer turns, smaller tool results, system text cut to 4000 chars and "
        "three small tools: a smoke run in minutes",
    )
    p.add_argument(
        "--result-lines",
        type=int,
        default=None,
        help="lines per tool result (default 8, a few hundred tokens; 4 with --quick)",
    )
    p.add_argument("--max-tokens", type=int, default=8, help="tokens per reply (default 8)")
    p.add_argument(
        "--no-supervisor",
        dest="supervised",
        action="store_false",
        help="run our worker directly instead of under mlxctl (which restarts it after kill -9)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds between the restart turn and the kill -9: our write-behind delay has "
        "passed (default 3)",
    )
    p.add_argument(
        "--servers",
        default="ours,mlx_lm",
        help="which to run, comma-separated: ours, mlx_lm (default both)",
    )
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--request-timeout", type=float, default=900.0, help="seconds (default 900)")
    p.add_argument("--json", type=Path, help="also write the raw samples to this file")
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the servers' logs and print where"
    )
    args = p.parse_args(argv)
    if args.turns is None:
        args.turns = 3 if args.quick else 10
    if args.result_lines is None:
        args.result_lines = 4 if args.quick else 8
    return args


def main(argv=None) -> int:
    from rich.console import Console

    from server.edge.blas import worker_env

    args = parse_args(argv)
    # Wide enough for the table when piped to a file (Rich assumes 80 columns there).
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 130)

    def say(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")

    model = str(Path(args.model).expanduser()) if args.model else str(default_model())
    session = build_session(
        load_fixture(args.fixtures), args.turns + 2, args.result_lines, args.quick
    )
    work = Path(tempfile.mkdtemp(prefix="mlxctl-bench-"))
    # A fresh mlxctl home: our worker's disk cache starts empty, so turn 0 is really cold.
    env = worker_env({**os.environ, "MLXCTL_HOME": str(work / "home")})
    servers = {s.strip() for s in args.servers.split(",") if s.strip()}
    say(f"model {model}; {args.turns} follow-up turns; logs in {work}")

    def ours_server():
        port = free_port()
        if args.supervised:
            return Supervised(model, port, env, work)
        argv = [sys.executable, "-m", "server", "--model", model, "--port", str(port)]
        return Server("ours", argv, port, env, work)

    def mlx_lm_server():
        port = free_port()
        return Server("mlx_lm", mlx_lm_argv(model, port, args.max_tokens), port, env, work)

    contenders = [
        (name, make, request)
        for name, make, request in (
            ("ours", ours_server, anthropic_request),
            ("mlx_lm", mlx_lm_server, openai_request),
        )
        if name in servers
    ]
    runs = {run.name: run for run in run_interleaved(contenders, session, args, say)}
    ours, mlx = runs.get("ours"), runs.get("mlx_lm")
    print_report(console, ours, mlx, args)
    if args.json:
        raw = {
            "model": model,
            "turns": args.turns,
            "quick": args.quick,
            "runs": [asdict(r) for r in (ours, mlx) if r],
        }
        args.json.write_text(json.dumps(raw, indent=1))
    if args.keep_logs:
        say(f"logs kept in {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    failed = any(r and (r.error or any(s.error for s in r.samples)) for r in (ours, mlx))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
