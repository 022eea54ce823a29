"""Worker overhead: HTTP streaming through `python -m server` vs in-process mlx-lm, same model.

    uv run python bench/worker_overhead.py [--model demo] [--prompt-tokens 1000] [--runs 3]

Runs both sides alternately in one process run (greedy, same prompt tokens, same reply length)
and prints time to first token and decode tokens/s, with ratios. Goals: decode within 5% of
in-process, TTFT overhead under 30 ms for a ~1K-token prompt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXT = (
    "The history of the lighthouse keepers of the northern coast is long and quiet. "
    "Each keeper kept a log of weather, ships and lamp oil, and the logs tell of storms, "
    "wrecks and rescues, of supply boats late by weeks, and of the slow work of keeping "
    "a flame alive through the winter nights. "
)


SHORT = [{"role": "user", "content": "Hi"}]
CLIENT = None  # one keep-alive connection, as a real client holds


def build_messages(tokenizer, target: int) -> list[dict]:
    """A user message whose rendered prompt is close to `target` tokens."""
    words = []
    while True:
        words.append(TEXT)
        messages = [{"role": "user", "content": "".join(words) + "\nSummarise the story above."}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if len(ids) >= target:
            return messages


def in_process(loaded, tokens: list[int], max_tokens: int) -> dict:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    started = time.perf_counter()
    first = last = None
    count = 0
    for response in stream_generate(
        loaded.model,
        loaded.tokenizer,
        tokens,
        max_tokens=max_tokens,
        sampler=make_sampler(temp=0.0),
    ):
        now = time.perf_counter()
        if response.text:  # the first visible text, as the HTTP side measures it
            first = first or now
        last = now
        count = response.generation_tokens
    assert first is not None and last is not None, "the model wrote no visible text"
    return {
        "ttft": first - started,
        "tokens": count,
        "tps": (count - 1) / (last - first) if count > 1 else 0.0,
    }


def over_http(base_url: str, model: str, messages: list[dict], max_tokens: int) -> dict:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = None
    usage = None
    assert CLIENT is not None, "main opens the client"
    with CLIENT.stream("POST", base_url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
    assert usage is not None, "the stream carried no usage"
    assert first is not None and last is not None, "the stream carried no text"
    count = usage["completion_tokens"]
    return {
        "ttft": first - started,
        "tokens": count,
        "prompt": usage["prompt_tokens"],
        "id": request_id,
        "tps": (count - 1) / (last - first) if count > 1 and last > first else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="mlxctl model name or MLX directory")
    parser.add_argument("--prompt-tokens", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="print every run")
    args = parser.parse_args()
    # Both sides must use the same BLAS; the worker preloads it, so this process does too.
    from server.edge.blas import reexec_with_openblas

    reexec_with_openblas()

    from rich.console import Console
    from rich.table import Table

    from mlxctl.models.registry import resolve
    from server.model.loading import load_model
    from tests.fixtures_worker import start_worker

    console = Console()
    path = resolve(args.model)
    loaded = load_model(path)
    messages = build_messages(loaded.tokenizer, args.prompt_tokens)
    text = loaded.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    tokens = loaded.tokenizer.encode(text, add_special_tokens=False)
    short_tokens = loaded.tokenizer.apply_chat_template(SHORT, add_generation_prompt=True)
    console.print(
        f"model {args.model} ({loaded.backend}), prompt {len(tokens)} tokens, "
        f"{args.max_tokens} new tokens, {args.runs} runs each, alternating"
    )

    global CLIENT
    import httpx

    CLIENT = httpx.Client(timeout=600)
    # No prefix cache: each run prefills its prompt, as the in-process side does.
    worker = start_worker(path, "--no-cache")
    try:
        in_process(loaded, tokens[:64], 4)  # warm-up both sides (first-call compiles)
        over_http(worker.base_url, path, [{"role": "user", "content": "hi"}], 4)
        local, remote, short_local, short_remote = [], [], [], []
        for _ in range(args.runs):
            local.append(in_process(loaded, tokens, args.max_tokens))
            remote.append(over_http(worker.base_url, path, messages, args.max_tokens))
            # A short prompt makes the fixed per-request cost visible next to the prefill;
            # it is cheap, so take more samples of it.
            for _ in range(4):
                short_local.append(in_process(loaded, short_tokens, 2))
                short_remote.append(over_http(worker.base_url, path, SHORT, 2))
    finally:
        worker.stop()
    # The worker logs its own TTFT (request queued -> first token) per request id: the client's
    # TTFT minus that one is what the HTTP path adds, measured on the same request.
    own = {}
    for line in worker.log().splitlines():
        if "ttft_ms=" in line:
            request_id = line.split(" server.access: ")[1].split()[0]
            ttft = int(line.split("ttft_ms=")[1].split()[0]) / 1000
            own[request_id] = (ttft, float(line.split("tps=")[1].split()[0]))
    for row in remote + short_remote:
        row["path"] = row["ttft"] - own[row["id"]][0]
        row["own_tps"] = own[row["id"]][1]

    assert remote[0]["prompt"] == len(tokens), (remote[0]["prompt"], len(tokens))
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    table = Table(title="Worker overhead (median of runs)")
    for column in ("metric", "in-process mlx-lm", "HTTP stream (worker)", "ratio / overhead"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    ttft_l, ttft_r = med(local, "ttft"), med(remote, "ttft")
    tps_l, tps_r = med(local, "tps"), med(remote, "tps")
    table.add_row(
        f"TTFT, {len(tokens)}-token prompt",
        f"{ttft_l * 1000:.0f} ms",
        f"{ttft_r * 1000:.0f} ms",
        f"{(ttft_r - ttft_l) * 1000:+.0f} ms",
    )
    short_l, short_r = med(short_local, "ttft"), med(short_remote, "ttft")
    table.add_row(
        f"TTFT, {len(short_tokens)}-token prompt",
        f"{short_l * 1000:.0f} ms",
        f"{short_r * 1000:.0f} ms",
        f"{(short_r - short_l) * 1000:+.0f} ms",
    )
    table.add_row(
        "HTTP path overhead (client TTFT - worker's own)",
        "",
        f"{med(remote, 'path') * 1000:.1f} ms / {med(short_remote, 'path') * 1000:.1f} ms",
        "long / short prompt",
    )
    table.add_row("decode tok/s", f"{tps_l:.1f}", f"{tps_r:.1f}", f"{tps_r / tps_l:.3f}x")
    table.add_row(
        "decode tok/s, worker's own count",
        "",
        f"{med(remote, 'own_tps'):.1f}",
        f"HTTP/own {tps_r / med(remote, 'own_tps'):.3f}x",
    )
    table.add_row("generated tokens", str(local[0]["tokens"]), str(remote[0]["tokens"]), "")
    console.print(table)
    if args.verbose:
        for name, rows in (("in-process", local), ("http", remote)):
            console.print(name, [(round(r["ttft"] * 1000), round(r["tps"], 1)) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
