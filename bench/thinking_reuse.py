"""Follow-up prompt reuse with thinking on, per thinking family: `python bench/thinking_reuse.py`.

For each tiny random-weight model built on a thinking family's template (plain KVCache and hybrid
qwen3_next caches), a real worker, and two 5-turn session shapes over the Anthropic API with
`thinking` enabled: a tool loop (one question, then tool results: Claude Code's shape) and new
questions (a user turn each time). Every reply's signed thinking and text go back in history.
Prints the share of each follow-up's prompt read from the prefix cache (min and mean over turns
2-5) and the least of the previous prompt it reused (100%: all of it but its last token, re-
rendered; a hybrid's checkpoint sits a few tokens earlier, before the generation prompt).
Not a test: numbers only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository: server, tests

CASES = [  # (template, family)
    ("qwen3", "qwen2"),
    ("qwen3_thinking", "qwen2"),
    ("qwen3_thinking", "qwen3_next"),
    ("qwen35", "qwen3_next"),
]
TOOL = {
    "name": "read_file",
    "description": "Read a file.",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}
KEY = "bench-key"


def ask(url: str, system: str, messages: list[dict], max_tokens: int) -> dict:
    body = {
        "model": "claude-bench",
        "max_tokens": max_tokens,
        "system": system,
        "messages": messages,
        "tools": [TOOL],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    r = httpx.post(url + "/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=300)
    r.raise_for_status()
    return r.json()


def session(url: str, shape: str, system: str, turns: int, max_tokens: int):
    """Per follow-up: the share of its prompt reused, and of the previous prompt."""
    messages: list[dict] = [{"role": "user", "content": "Look at the project, then fix the bug."}]
    shares, kept_previous, prompt = [], [], 0
    for n in range(1, turns + 1):
        reply = ask(url, system, messages, max_tokens)
        usage = reply["usage"]
        previous, prompt = prompt, usage["input_tokens"] + usage["cache_read_input_tokens"]
        if n > 1:
            shares.append(usage["cache_read_input_tokens"] / prompt)
            kept_previous.append(min(1.0, usage["cache_read_input_tokens"] / (previous - 1)))
        kept = [b for b in reply["content"] if b["type"] in ("thinking", "text")]
        if shape == "tool loop":
            call: dict[str, object] = {"type": "tool_use", "id": f"toolu_{n}", "name": "read_file"}
            call["input"] = {"path": f"src/file{n}.py"}
            result = {"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": f"x = {n}\n"}
            messages += [
                {"role": "assistant", "content": [*kept, call]},
                {"role": "user", "content": [result]},
            ]
        else:
            messages += [
                {"role": "assistant", "content": kept or [{"type": "text", "text": "Done."}]},
                {"role": "user", "content": f"Now question {n + 1}."},
            ]
    return shares, kept_previous


def main(argv: list[str] | None = None) -> None:
    from mlx_lm.utils import load_tokenizer

    from tests.conftest import tiny_model
    from tests.fixtures_worker import start_worker
    from tests.worker.test_cache import long_text

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--system-words", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args(argv)

    home = tempfile.mkdtemp(prefix="thinking-bench-home-")
    rows = []
    for template, family in CASES:
        path = tiny_model(template=template, family=family)
        tokenizer = load_tokenizer(path)
        parser = tokenizer.tool_parser.__module__.rsplit(".", 1)[-1]
        cache = "ArraysCache + KVCache" if family == "qwen3_next" else "KVCache"
        handle = start_worker(path, env={**os.environ, "MLXCTL_HOME": home}, api_key=KEY)
        try:
            for i, shape in enumerate(("tool loop", "new questions")):
                system = long_text(args.system_words, seed=50 + i)
                shares, previous = session(
                    handle.base_url, shape, system, args.turns, args.max_tokens
                )
                rows.append((template, family, parser, cache, shape, shares, min(previous)))
        finally:
            handle.stop()

    print(
        f"\n{args.turns}-turn sessions, thinking on, system {args.system_words} words, "
        f"max_tokens {args.max_tokens}; follow-up prompt share read from the cache\n"
    )
    head = ("template", "family", "tool parser", "cache kind", "session", "min", "mean", "prev")
    widths = (15, 11, 12, 22, 14, 5, 5, 6)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for template, family, parser, cache, shape, shares, previous in rows:
        mean = sum(shares) / len(shares)
        cells = (
            *(template, family, parser, cache, shape),
            *(f"{min(shares):.0%}", f"{mean:.0%}", f"{previous:.1%}"),
        )
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))


if __name__ == "__main__":
    main()
