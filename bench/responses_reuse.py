"""Follow-up prompt reuse under the Responses API per client: `python bench/responses_reuse.py`.

A tiny random-weight model on a thinking template (every reply opens `<think>`), a real worker,
and a 5-turn tool loop (one question, then a tool's output each turn) sent four ways:

  chained       `previous_response_id` and only the new items (the store renders the rest)
  stateless     every item again, reasoning items with their summary (the SDK's own items)
  codex         every item again, `store: false`, reasoning items with only `encrypted_content`
                (Codex's shape: `include: ["reasoning.encrypted_content"]`, summary dropped)
  codex, no blob  the same with no `encrypted_content` (what a worker without it could do)

Each style runs on a fresh worker with the same system prompt. Prints the share of each
follow-up's prompt read from the prefix cache (min and mean over turns 2-5), the least of the
previous prompt it reused (100%: all but its last token, re-rendered), the last prompt's length
(equal where the reasoning renders as the model wrote it; shorter where it was lost), and the
mean time to first token of the follow-ups against the cold first request.
Not a test: numbers only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository: server, tests

KEY = "bench-key"
TOOL = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
}
STYLES = ("chained", "stateless", "codex", "codex, no blob")


def ask(url: str, body: dict) -> tuple[dict, float]:
    """The finished response of a streamed request, and its time to the first output event."""
    started, first = time.perf_counter(), None
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", url + "/v1/responses", json={**body, "stream": True}, headers=headers, timeout=600
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if first is None and event["type"] == "response.output_item.added":
                first = time.perf_counter() - started
            if event["type"] in ("response.completed", "response.incomplete"):
                return event["response"], first or time.perf_counter() - started
    raise RuntimeError("the stream ended without its response")


def sent_back(item: dict, style: str) -> dict:
    """An output item as the style's client sends it back."""
    if item["type"] != "reasoning" or style == "stateless":
        return item
    kept = {"type": "reasoning", "id": item["id"], "summary": []}
    if style == "codex":
        kept["encrypted_content"] = item["encrypted_content"]
    return kept


def session(url: str, style: str, system: str, turns: int, max_tokens: int):
    """Per follow-up: the share of its prompt reused and of the previous prompt; TTFTs."""
    history: list[dict] = [{"role": "user", "content": "Look at the project, then fix the bug."}]
    new_items, previous_id = list(history), None
    shares, kept_previous, ttfts, prompt = [], [], [], 0
    for n in range(1, turns + 1):
        body = {
            "model": "claude-bench",  # any claude-* name is the served model
            "instructions": system,
            "tools": [TOOL],
            "max_output_tokens": max_tokens,
            "temperature": 0,
            "include": ["reasoning.encrypted_content"],
            "store": style == "chained",
        }
        if style == "chained":
            body.update(input=new_items, previous_response_id=previous_id)
        else:
            body["input"] = history
        response, ttft = ask(url, body)
        usage = response["usage"]
        previous, prompt = prompt, usage["input_tokens"]
        cached = usage["input_tokens_details"]["cached_tokens"]
        ttfts.append(ttft)
        if n > 1:
            shares.append(cached / prompt)
            kept_previous.append(min(1.0, cached / (previous - 1)))
        call = {"type": "function_call", "call_id": f"call_{n}", "name": "read_file"}
        call["arguments"] = json.dumps({"path": f"src/file{n}.py"})
        output = {"type": "function_call_output", "call_id": f"call_{n}", "output": f"x = {n}\n"}
        said = [sent_back(i, style) for i in response["output"] if i["type"] != "function_call"]
        history += [*said, call, output]
        # Chained: the stored output stands for `said`; the call is the client's own turn.
        new_items, previous_id = [call, output], response["id"]
    return shares, kept_previous, ttfts, prompt


def main(argv: list[str] | None = None) -> None:
    from tests.conftest import tiny_model
    from tests.fixtures_worker import start_worker
    from tests.worker.test_cache import long_text

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--system-words", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args(argv)

    home = tempfile.mkdtemp(prefix="responses-bench-home-")
    system = long_text(args.system_words, seed=60)
    rows = []
    for style in STYLES:  # a fresh worker each: no style reuses another's prompts
        handle = start_worker(
            tiny_model(template="qwen3_thinking"),
            env={**os.environ, "MLXCTL_HOME": home},
            api_key=KEY,
        )
        try:
            rows.append(
                (style, *session(handle.base_url, style, system, args.turns, args.max_tokens))
            )
        finally:
            handle.stop()

    print(
        f"\n{args.turns}-turn tool loop over the Responses API, thinking template, system "
        f"{args.system_words} words, max_output_tokens {args.max_tokens}\n"
    )
    head = ("client", "min", "mean", "prev", "last prompt", "cold TTFT", "follow-up", "ratio")
    widths = (15, 5, 5, 6, 12, 10, 10, 6)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for style, shares, previous, ttfts, last in rows:
        follow = sum(ttfts[1:]) / len(ttfts[1:])
        cells = (
            style,
            f"{min(shares):.0%}",
            f"{sum(shares) / len(shares):.0%}",
            f"{min(previous):.1%}",
            f"{last} tok",
            f"{ttfts[0]:.2f} s",
            f"{follow:.2f} s",
            f"{ttfts[0] / follow:.1f}x",
        )
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
