"""Vision benchmark: a Claude-Code-shaped session with a screenshot in turn 2, on a vision model.

    uv run python bench/vision.py [--model PATH | --family F] [--quick]
                                  [--sessions 4] [--max-tokens 48] [--against-mlx-vlm]
                                  [--worker-args '--prefill-streams 1']

The session is a captured Claude Code request's system prompt and tools (read from the
fixtures), its first user message, then a turn where the user pastes a screenshot (an `image`
block) and a text follow-up. Over the Anthropic API, streamed, greedy:

  follow-up: the third request (the image in its history) after the first two, against the same
  request sent cold (an empty cache): TTFT and the prompt tokens reused;
  sessions: N such sessions (each its own first question and its own screenshot) run at once,
  against the same N one after the other: wall seconds, from an empty cache (one cold prefill
  of the shared system prompt, which no concurrency shortens, weighs on both) and again with
  the system prompt cached by another session (as a machine that has served Claude Code has).

The default model is the tiny random-weight Gemma 3 VLM (`server.testing.tiny_vlm`, 32K
context), built once into the test cache; `--family qwen3_vl` (`qwen3_vl_moe`, `qwen3_5`,
`qwen3_5_moe`, `qwen2_5_vl`) takes the tiny Qwen-VL of that family instead (M-RoPE positions;
a 1280x800 screenshot is 240 image tokens on Qwen3-VL, 256 on Gemma 3).
`--against-mlx-vlm` runs the same on mlx_vlm.server (its Anthropic route) and prints the two
side by side: mlx_lm.server reads no images, so mlx-vlm's own server is the peer that serves this
session on the same model.

Targets: follow-up >= 10x faster than cold with >= 90% of its prompt reused; N sessions at once
<= 0.6x the time of one by one.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))

import httpx  # noqa: E402

from bench import agentic_requests, agentic_servers, agentic_session  # noqa: E402

HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "bench"}


def screenshot(k: int) -> dict:
    """A 1280x800 PNG unlike any other session's: a window with bars of its own colours."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1280, 800), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    for row in range(20):
        shade = ((row * 37 + k * 71) % 200, (row * 11 + k * 29) % 200, (k * 53) % 200)
        draw.rectangle([40, 40 + row * 36, 40 + (row * 97 + k * 13) % 1200, 64 + row * 36], shade)
    out = io.BytesIO()
    image.save(out, "PNG")
    data = base64.b64encode(out.getvalue()).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def session_messages(base: dict, k: int) -> list[list[dict]]:
    """The three requests' messages of session `k`."""
    first = json.loads(json.dumps(base["messages"][0]))
    first["content"][-1]["text"] += f"\nThis is session {k}: start with module {k}."
    pasted = {
        "role": "user",
        "content": [
            screenshot(k),
            {"type": "text", "text": "Here is a screenshot of the error I get. What is wrong?"},
        ],
    }
    turns = [[first]]
    turns.append([first, {"role": "assistant", "content": "Show me what you see."}, pasted])
    follow = {"role": "user", "content": "Fix it in the file you named, please."}
    turns.append(
        [*turns[1], {"role": "assistant", "content": "The build fails at import."}, follow]
    )
    return turns


def ask(url: str, base: dict, messages: list[dict], max_tokens: int) -> dict:
    body = {
        "model": base.get("model", "claude-sonnet-4-5"),
        "system": base["system"],
        "tools": base["tools"],
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start, first = time.perf_counter(), None
    out: dict[str, float] = {"cached": 0, "prompt": 0}
    with httpx.stream(
        "POST", url + "/v1/messages", json=body, headers=HEADERS, timeout=3600, trust_env=False
    ) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        for event in agentic_requests.sse_events(response):
            kind = event.get("type")
            if kind == "message_start":
                usage = event["message"]["usage"]
                out["cached"] = usage.get("cache_read_input_tokens") or 0
                out["prompt"] = out["cached"] + (usage.get("input_tokens") or 0)
                out["prompt"] += usage.get("cache_creation_input_tokens") or 0
            elif kind == "content_block_delta" and first is None:
                first = time.perf_counter()
            elif kind == "error":
                raise RuntimeError(json.dumps(event))
    end = time.perf_counter()
    out["ttft"] = (first or end) - start
    return out


def clear(url: str) -> None:
    """Empty the prefix cache (ours: DELETE /v1/cache; mlx_vlm.server: its reset route)."""
    httpx.delete(url + "/v1/cache", headers=HEADERS, timeout=60, trust_env=False)
    httpx.post(url + "/v1/cache/reset", headers=HEADERS, timeout=60, trust_env=False)


def run_session(url: str, base: dict, turns: list[list[dict]], max_tokens: int) -> list[dict]:
    return [ask(url, base, m, max_tokens) for m in turns]


def sessions_wall(url: str, base: dict, args, mode: str, first: int = 1) -> float:
    """Seconds for sessions first..first+N-1, one after the other or all at once. Their
    screenshots are drawn before the clock starts: a user's exist already (drawing one took ~0.1 s
    of the clients' CPU, under the GIL, beside the worker)."""
    sessions = [session_messages(base, k) for k in range(first, first + args.sessions)]
    t0 = time.perf_counter()
    if mode == "one by one":
        for turns in sessions:
            run_session(url, base, turns, args.max_tokens)
    else:
        threads = [
            threading.Thread(target=run_session, args=(url, base, turns, args.max_tokens))
            for turns in sessions
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    from server.edge.blas import worker_env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a vision-language model (default: the tiny VLM)")
    parser.add_argument(
        "--family",
        default="gemma3",
        choices=("gemma3", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "qwen2_5_vl"),
        help="the tiny VLM's",
    )
    parser.add_argument("--fixtures", type=Path, default=agentic_session.DEFAULT_FIXTURES)
    parser.add_argument("--quick", action="store_true", help="a cut system prompt, 3 tools")
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--worker-args",
        default="",
        help="more flags for our worker, e.g. '--prefill-streams 1' (one prompt at a time)",
    )
    parser.add_argument(
        "--against-mlx-vlm",
        action="store_true",
        help="the same on mlx_vlm.server (mlx_lm.server reads no images), side by side",
    )
    args = parser.parse_args(argv)

    if args.model:
        model = args.model
    else:
        from tests.conftest import tiny_vlm

        model = str(tiny_vlm(args.family))
    body = agentic_session.load_fixture(args.fixtures)
    session = agentic_session.build_session(body, 0, 0, args.quick)
    base = {"system": session.system, "tools": session.tools, "messages": [session.first_user]}

    work = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    env = worker_env({**os.environ, "MLXCTL_HOME": str(work / "home")})
    port = agentic_servers.free_port()
    argv = [sys.executable, "-m", "server", "--model", model, "--port", str(port)]
    argv += ["--cache-dir", str(work / "kv"), "--api-key", "bench", *shlex.split(args.worker_args)]
    results = {"ours": measure(agentic_servers.Server("ours", argv, port, env, work), base, args)}
    if args.against_mlx_vlm:  # its own Anthropic route; it loads the model the body names
        port = agentic_servers.free_port()
        argv = [sys.executable, "-m", "mlx_vlm.server", "--model", model, "--port", str(port)]
        # Its automatic prefix cache is off unless asked for: on, as ours is, in RAM only (its
        # reset route empties no disk tier) and under the run's own folder.
        apc = {"APC_ENABLED": "1", "APC_DISK_ENABLED": "0", "MLX_VLM_CACHE_HOME": str(work)}
        server = agentic_servers.Server("mlx_vlm.server", argv, port, {**env, **apc}, work)
        results["mlx_vlm.server"] = measure(server, {**base, "model": model}, args)
    print(f"\nmodel {model}\n")
    for name, result in results.items():
        print(f"{name}:\n")
        print_table(result, args.sessions)
    if len(results) > 1:
        print_comparison(results)
    return 0


def measure(server, base: dict, args) -> dict:
    """The session's follow-up against cold, and N sessions at once against one by one."""
    server.start(600)
    try:
        url = server.url
        clear(url)
        turns = run_session(url, base, session_messages(base, 0), args.max_tokens)
        clear(url)
        cold = ask(url, base, session_messages(base, 0)[2], args.max_tokens)
        walls: dict[tuple[bool, str], float] = {}
        for warm_system in (False, True):
            for mode in ("one by one", "at once"):
                clear(url)
                if warm_system:  # another session's first turn: the system prompt is cached
                    ask(url, base, session_messages(base, 99)[0], 1)
                # Sessions of their own each run: no run finds images an earlier one saw (the
                # worker keeps recent images' features beside the prefix cache).
                first = 1 + 10 * len(walls)
                walls[warm_system, mode] = sessions_wall(url, base, args, mode, first)
    finally:
        server.stop()
    return {"turns": turns, "warm": turns[2], "cold": cold, "walls": walls}


def print_table(result: dict, n: int) -> None:
    turns, warm, cold, walls = result["turns"], result["warm"], result["cold"], result["walls"]
    reuse = warm["cached"] / warm["prompt"] if warm["prompt"] else 0.0
    speedup = cold["ttft"] / warm["ttft"] if warm["ttft"] else float("inf")
    print(f"prompt {warm['prompt']:,} tokens at the follow-up\n")
    print("| measure | value | target | met |")
    print("| --- | --- | --- | --- |")
    print(f"| screenshot turn TTFT (image new) | {turns[1]['ttft']:.3f} s | | |")
    print(f"| follow-up TTFT, image in history | {warm['ttft']:.3f} s | | |")
    print(f"| same request cold | {cold['ttft']:.3f} s | | |")
    print(f"| cold / follow-up | {speedup:.1f}x | >= 10x | {speedup >= 10} |")
    print(
        f"| follow-up tokens reused | {warm['cached']:,} of {warm['prompt']:,} ({reuse:.1%}) "
        f"| >= 90% | {reuse >= 0.9} |"
    )
    for warm_system, label in ((False, "empty cache"), (True, "system prompt cached")):
        alone, together = walls[warm_system, "one by one"], walls[warm_system, "at once"]
        ratio = together / alone
        print(f"| {n} sessions one by one ({label}) | {alone:.2f} s | | |")
        print(f"| {n} sessions at once ({label}) | {together:.2f} s | | |")
        print(f"| at once / one by one ({label}) | {ratio:.2f}x | <= 0.6x | {ratio <= 0.6} |")
    print()


def print_comparison(results: dict) -> None:
    """Ours against mlx_vlm.server, side by side: seconds and their ratio (theirs / ours)."""
    ours, theirs = results["ours"], results["mlx_vlm.server"]
    rows = [
        ("screenshot turn TTFT", ours["turns"][1]["ttft"], theirs["turns"][1]["ttft"]),
        ("follow-up TTFT, image in history", ours["warm"]["ttft"], theirs["warm"]["ttft"]),
        ("same request cold", ours["cold"]["ttft"], theirs["cold"]["ttft"]),
    ]
    for warm_system, label in ((False, "empty cache"), (True, "system prompt cached")):
        for mode in ("one by one", "at once"):
            key = (warm_system, mode)
            rows.append((f"sessions {mode} ({label})", ours["walls"][key], theirs["walls"][key]))
    print("| seconds | ours | mlx_vlm.server | mlx_vlm.server / ours |")
    print("| --- | --- | --- | --- |")
    for name, a, b in rows:
        print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
