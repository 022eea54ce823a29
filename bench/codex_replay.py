"""Codex session replay: our worker's Responses API vs mlx_lm.server on the same requests.

    uv run python bench/codex_replay.py [--model PATH] [--max-tokens 1]

Replays the captured Codex 0.171.0 session (tests/fixtures/codex-0.171.0/exec-shell-session: a
cold first request, then three follow-ups: a shell call's output, a resumed turn and its call's
output), then the first request of a second session (tests/fixtures/.../second-session: another
working directory, its date moved a day on). Ours gets each `POST /v1/responses` body as Codex
sent it; mlx_lm.server (no Responses API) the equivalent chat-completions request: the messages
and tools our adapter makes of it. Both servers run at once and take each step in turn.

Time to first token (TTFT) is a whole request with a one-token reply, measured on the client;
reused tokens are what each server reports as cached. The default model is the tests' tiny
32K-context model: Codex's ~12K-token prompt takes a while to prefill cold on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: `server` and `bench` come from the checkout

from bench.agentic_servers import Server, default_model, free_port, mlx_lm_argv  # noqa: E402

SESSIONS = ROOT / "tests" / "fixtures" / "codex-0.171.0"
FOLLOW_UP_VS_COLD = 20.0  # targets of issue 24 (ratios of TTFT), and reuse of the prompt
SESSION2_VS_COLD = 10.0
REUSE = 0.95


def bodies(session: str) -> list[dict]:
    folder = SESSIONS / session
    return [json.loads(p.read_text())["body"] for p in sorted(folder.glob("*.json"))]


def another_day(body: dict) -> dict:
    """The request as Codex would send it tomorrow: its `current_date` a day on."""
    text = json.dumps(body)
    start = text.index("<current_date>") + len("<current_date>")
    day = text[start : start + 10]
    moved = (datetime.date.fromisoformat(day) + datetime.timedelta(days=1)).isoformat()
    return json.loads(text.replace(f"<current_date>{day}", f"<current_date>{moved}"))


def as_chat(body: dict) -> tuple[list[dict], list[dict] | None]:
    """The chat-completions messages and tools our Responses adapter makes of `body`."""
    from server.api.responses.protocol import ResponsesRequest, to_chat_request

    request = to_chat_request(ResponsesRequest.model_validate(body))
    messages = json.loads(json.dumps(request.messages))
    for message in messages:
        for call in message.get("tool_calls") or []:  # mlx_lm.server reads arguments as text
            call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    return messages, request.tools


def ours(
    url: str, model: str, body: dict, max_tokens: int, timeout: float
) -> tuple[float, int, int]:
    """(seconds, prompt tokens, cached tokens) of one non-streamed Responses request."""
    body = {**body, "model": model, "stream": False, "max_output_tokens": max_tokens}
    t0 = time.perf_counter()
    reply = httpx.post(url + "/v1/responses", json=body, timeout=timeout, trust_env=False)
    took = time.perf_counter() - t0
    reply.raise_for_status()
    usage = reply.json()["usage"]
    return took, usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"]


def theirs(url: str, model: str, body: dict, max_tokens: int, timeout: float):
    """The same for mlx_lm.server's chat completions (cached tokens when it reports them)."""
    messages, tools = as_chat(body)
    request = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    if tools:
        request["tools"] = tools
    t0 = time.perf_counter()
    reply = httpx.post(url + "/v1/chat/completions", json=request, timeout=timeout, trust_env=False)
    took = time.perf_counter() - t0
    reply.raise_for_status()
    usage = reply.json().get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    return took, usage.get("prompt_tokens", 0), cached


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/codex_replay.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="MLX model directory (default: the tiny 32K test model)")
    p.add_argument("--max-tokens", type=int, default=1, help="tokens per reply (default 1)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds (default 300)")
    p.add_argument("--request-timeout", type=float, default=900.0, help="seconds (default 900)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model = str(args.model or default_model())
    steps = [(f"session 1, request {i + 1}", b) for i, b in enumerate(bodies("exec-shell-session"))]
    steps.append(("session 2 (other cwd, next day)", another_day(bodies("second-session")[0])))
    steps[0] = ("session 1, request 1 (cold)", steps[0][1])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="codex-replay-") as tmp:
        port_a, port_b = free_port(), free_port()
        our_argv = [sys.executable, "-m", "server", "--model", model, "--port", str(port_a),
                    "--cache-dir", str(Path(tmp) / "kv")]  # fmt: skip
        servers = [
            Server("ours", our_argv, port_a, env, Path(tmp)),
            Server("mlx_lm.server", mlx_lm_argv(model, port_b, args.max_tokens), port_b, env,
                   Path(tmp)),
        ]  # fmt: skip
        try:
            for server in servers:
                server.start(args.startup_timeout)
            name = httpx.get(servers[0].url + "/v1/models", trust_env=False).json()["data"][0]["id"]
            rows = []
            for label, body in steps:
                a = ours(servers[0].url, name, body, args.max_tokens, args.request_timeout)
                b = theirs(servers[1].url, model, body, args.max_tokens, args.request_timeout)
                rows.append((label, a, b))
        finally:
            for server in servers:
                server.stop()
    report(rows)
    return 0


def report(rows) -> None:
    cold = rows[0][1][0]
    print(f"{'request':34} {'prompt':>7} {'ours s':>8} {'reused':>14} {'vs cold':>8} "
          f"{'mlx_lm s':>9} {'reused':>14} {'ours vs mlx_lm':>15}")  # fmt: skip
    for label, (ts, prompt, cached), (tm, _, their_cached) in rows:
        mine = f"{cached} ({cached / prompt:.0%})"
        other = "-" if their_cached is None else f"{their_cached} ({their_cached / prompt:.0%})"
        print(f"{label:34} {prompt:>7} {ts:>8.2f} {mine:>14} {cold / ts:>7.1f}x {tm:>9.2f} "
              f"{other:>14} {tm / ts:>14.1f}x")  # fmt: skip
    follow = [r[1] for r in rows[1:-1]]
    second = rows[-1][1]
    previous = [rows[0][1][1]] + [r[1][1] for r in rows[1:-2]]
    reuse = min(c / p for (_, _, c), p in zip(follow, previous, strict=True))
    print(f"\nfollow-ups vs cold: {min(cold / t for t, _, _ in follow):.1f}x or more "
          f"(target {FOLLOW_UP_VS_COLD:g}x); second session vs cold: {cold / second[0]:.1f}x "
          f"(target {SESSION2_VS_COLD:g}x); reuse of the previous prompt: {reuse:.1%} or more, "
          f"a new session's {second[2] / second[1]:.1%} (target {REUSE:.0%})")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
