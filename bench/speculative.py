"""Speculative decoding: decode speed with copy drafts against plain decoding, per turn kind.

    uv run python bench/speculative.py [--family qwen2] [--context 32768] [--repeats 2] [--mtp]
    python bench/speculative.py --model PATH --turns-file turns.json   (a built model, no git)

Turns whose output is known text, so acceptance is that of real text and not of random weights:
edit turns built from real commits of this repository (the prompt holds the file before, read
through a `Read` tool call; the reply is an `Edit` call whose old_string/new_string are the
commit's first hunk, or a `Write` of the file after), and prose (the reply is a README section
the prompt does not hold). A test-only logits processor (server/testing/forcing.py) makes the
tiny random-weight model write that text; every draft is still verified by the real forward.

Three workers on the same model, taking the same turns one after the other: `--speculative off`
(plain), `auto` (the cost model decides) and `copy` (always drafts); with `--draft-model PATH`
(`same`: the model itself) a fourth, `--speculative draft`. The forced replies are not what a
draft model writes, so its row is a draft model's worst case: the cost of drafts that fail.
With `--mtp` the model is the tiny hybrid (qwen3_next) with a random MTP head, and a worker with
`--speculative mtp` joins: a random head's guesses fail, so its row is the head's cost with the
copy drafts stacked on it.
Per turn kind: the reply's decode tok/s (the worker's own figure: first token to the end),
tokens per verify step, drafts accepted, and whether the replies are identical. Then N
concurrent edit turns, plain and auto (drafting is for a sequence decoding alone, so a batch
decodes plainly), and what auto's cost model and guard measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KEY = "bench-key"
MODEL = "claude-sonnet-4-5"  # any claude-* name maps to the loaded model
HEADERS = {"authorization": f"Bearer {KEY}"}
# (commit, file): real changes of this repository, files of 2-7 KB before the change.
COMMITS = [
    ("d8ce529", "server/prefix_cache/ram_tier.py"),
    ("cd5bea5", "server/model/loading.py"),
    ("8db903c", "server/api/responses/protocol.py"),
    ("373ad1f", "server/model/memory.py"),
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} a file.",
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string"} for p in params},
                "required": list(params),
            },
        },
    }
    for name, params in (
        ("Read", ("file_path",)),
        ("Edit", ("file_path", "old_string", "new_string")),
        ("Write", ("file_path", "content")),
    )
]

# Codex's own tools for the patch turns: it reads with `shell` and edits with `apply_patch`, whose
# freeform input the worker's Responses API gives the model as one string parameter.
CODEX_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {param: kind},
                "required": [param],
            },
        },
    }
    for name, description, param, kind in (
        ("shell", "Run a command.", "command", {"type": "array", "items": {"type": "string"}}),
        ("apply_patch", "Edit files with a patch.", "input", {"type": "string"}),
    )
]


def tools_for(messages: list[dict]) -> list[dict]:
    """A patch turn's tools are Codex's (it read the file with `shell`); the others', ours."""
    calls = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or []]
    return CODEX_TOOLS if "shell" in calls else TOOLS


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout


def first_hunk(commit: str, path: str) -> tuple[str, str]:
    """The commit's first hunk in `path` as (old, new) text, two lines of context each side."""
    old: list[str] = []
    new: list[str] = []
    inside = False
    for line in git("diff", "-U2", f"{commit}^", commit, "--", path).splitlines():
        if line.startswith("@@"):
            if inside:
                break
            inside = True
        elif inside and not line.startswith("\\"):
            if line[:1] in (" ", "-"):
                old.append(line[1:])
            if line[:1] in (" ", "+"):
                new.append(line[1:])
    return "\n".join(old), "\n".join(new)


def first_patch(commit: str, path: str) -> str:
    """The commit's first hunk in `path` as Codex's `apply_patch` input (three lines of context,
    each line marked ` `, `-` or `+`)."""
    lines = ["*** Begin Patch", f"*** Update File: {path}"]
    inside = False
    for line in git("diff", "-U3", f"{commit}^", commit, "--", path).splitlines():
        if line.startswith("@@"):
            if inside:
                break
            inside = True
            lines.append("@@")
        elif inside and not line.startswith("\\"):
            lines.append(line)
    return "\n".join([*lines, "*** End Patch"])


def call_text(name: str, arguments: dict) -> str:
    """A tool call as the Hermes template's model writes it."""
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


def read_turn(
    marker: str, path: str, before: str, ask: str, tool: str = "Read", arguments: dict | None = None
) -> list[dict]:
    """A turn where the agent read `path` with `tool` (Claude Code's `Read` by default) and got
    the file back."""
    read: dict[str, object] = {"id": "call_read", "type": "function"}
    read["function"] = {"name": tool, "arguments": json.dumps(arguments or {"file_path": path})}
    return [
        {"role": "system", "content": "You are a coding agent. Use the tools."},
        {"role": "user", "content": f"{ask} {marker}"},
        {"role": "assistant", "content": None, "tool_calls": [read]},
        {"role": "tool", "tool_call_id": "call_read", "content": before},
    ]


def turns() -> list[tuple[str, str, list[dict], str]]:
    """(kind, marker, messages, forced reply) for each turn."""
    out = []
    for i, (commit, path) in enumerate(COMMITS):
        before, after = git("show", f"{commit}^:{path}"), git("show", f"{commit}:{path}")
        old, new = first_hunk(commit, path)
        marker = f"[edit {i}]"
        edit = {"file_path": path, "old_string": old, "new_string": new}
        messages = read_turn(marker, path, before, f"Apply commit {commit} to {path}.")
        out.append(("edit", marker, messages, call_text("Edit", edit)))
        marker = f"[write {i}]"
        messages = read_turn(marker, path, before, f"Rewrite {path} as in commit {commit}.")
        out.append(
            ("write", marker, messages, call_text("Write", {"file_path": path, "content": after}))
        )
        marker = f"[patch {i}]"
        ask, cat = f"Apply commit {commit} to {path}.", {"command": ["cat", path]}
        messages = read_turn(marker, path, before, ask, "shell", cat)  # Codex reads with `cat`
        patch = call_text("apply_patch", {"input": first_patch(commit, path)})
        out.append(("patch", marker, messages, patch))
    readme = (REPO / "README.md").read_text().split("\n## ")
    for i in range(2):
        marker = f"[prose {i}]"
        question = f"Summarise this section. {marker}\n\n{readme[1 + i]}"
        reply = readme[-1 - i][:1500]  # another section: little of it is in the prompt
        out.append(("prose", marker, [{"role": "user", "content": question}], reply))
    return out


def ask(url: str, messages: list[dict], max_tokens: int) -> tuple[dict, dict]:
    """One greedy request; (its message, its figures from /v1/status recent)."""
    body: dict[str, object] = {"model": MODEL, "messages": messages, "tools": tools_for(messages)}
    body["max_tokens"] = max_tokens
    body["temperature"] = 0
    r = httpx.post(url + "/v1/chat/completions", json=body, headers=HEADERS, timeout=600)
    r.raise_for_status()
    status = httpx.get(url + "/v1/status", headers=HEADERS).json()
    return r.json()["choices"][0]["message"], status["recent"][0]


def same_parts(message: dict) -> str:
    """What greedy identity compares: the text and each call's name and arguments (not ids)."""
    calls = [
        (c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []
    ]
    return json.dumps([message.get("content"), calls])


def concurrent(url: str, messages: list[dict], n: int, max_tokens: int) -> float:
    """Aggregate output tok/s of `n` copies of a turn sent at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(ask_tokens, url, messages, max_tokens) for _ in range(n)]
        tokens = sum(f.result() for f in futures)
    return tokens / (time.perf_counter() - started)


def ask_tokens(url: str, messages: list[dict], max_tokens: int) -> int:
    body: dict[str, object] = {"model": MODEL, "messages": messages, "tools": tools_for(messages)}
    body["max_tokens"] = max_tokens
    body["temperature"] = 0
    r = httpx.post(url + "/v1/chat/completions", json=body, headers=HEADERS, timeout=600)
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


def numbered(message: dict) -> dict:
    """A tool result as Claude Code's `Read` shows a file: `12\tcode`, a bare number when empty."""
    if message["role"] != "tool":
        return message
    lines = message["content"].split("\n")
    shown = [f"{i}\t{line}" if line else str(i) for i, line in enumerate(lines, 1)]
    return {**message, "content": "\n".join(shown)}


def pick_turns(args) -> list:
    """The turns to take: from `--turns-file` (a machine without this repository's history) or
    built from git, then the first `--per-kind` of each kind."""
    if args.turns_file:
        loaded = [tuple(t) for t in json.loads(Path(args.turns_file).read_text())]
    else:
        loaded = turns()
    if args.numbered_reads:
        loaded = [(k, m, [numbered(x) for x in msgs], r) for k, m, msgs, r in loaded]
    if args.per_kind:
        counts: dict[str, int] = {}
        kept = []
        for turn in loaded:
            counts[turn[0]] = counts.get(turn[0], 0) + 1
            if counts[turn[0]] <= args.per_kind:
                kept.append(turn)
        loaded = kept
    return loaded


class Worker:
    """`python -m server` under the bench's key, private cache folders, the given flags."""

    def __init__(self, model: str, flags: list[str], env: dict, work: Path, name: str):
        from bench.agentic_servers import Server, free_port

        port = free_port()
        argv = [sys.executable, "-m", "server", "--model", model, "--port", str(port)]
        argv += ["--api-key", KEY, "--cache-dir", str(work / f"{name}-kv")]
        argv += ["--responses-dir", str(work / f"{name}-responses"), *flags]
        self.server = Server(name, argv, port, env, work)
        self.base_url = self.server.url

    def stop(self) -> None:
        self.server.stop()


def main(argv: list[str] | None = None) -> int:
    from server.edge.blas import worker_env

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="a model folder (default: a tiny test model)")
    ap.add_argument("--turns-file", default=None, help="turns written by --dump-turns")
    ap.add_argument("--dump-turns", default=None, help="write the turns to this file and stop")
    ap.add_argument("--per-kind", type=int, default=0, help="take the first N turns of each kind")
    ap.add_argument(
        "--numbered-reads",
        action="store_true",
        help="the files read shown as Claude Code's Read shows them (a line number and a tab)",
    )
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument(
        "--warmup-tokens",
        type=int,
        default=96,
        help="an untimed turn of each kind per worker first (first-use work such as MLX CUDA's "
        "kernel compiles is not a turn's speed); 0: none",
    )
    ap.add_argument("--family", default="qwen2", help="tiny model family (qwen2, qwen3_next)")
    ap.add_argument("--context", type=int, default=32768, help="tiny model context")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--sessions", type=int, default=4, help="N for the concurrent rows")
    ap.add_argument("--draft-model", default=None, help="adds a `--speculative draft` worker")
    ap.add_argument("--mtp", action="store_true", help="a hybrid with an MTP head; adds `mtp`")
    args = ap.parse_args(argv)
    if args.dump_turns:
        Path(args.dump_turns).write_text(json.dumps(turns()))
        return 0
    if args.mtp:
        args.family = "qwen3_next"
    if args.model:
        model = args.model
    else:
        from tests.conftest import tiny_model

        shape = {"context": args.context, "layers": args.layers, "hidden": args.hidden}
        extra_shape = {"mtp": True} if args.mtp else {}
        model = str(tiny_model(family=args.family, **shape, **extra_shape))
    all_turns = pick_turns(args)
    work = Path(tempfile.mkdtemp(prefix="spec-bench-"))
    forced = work / "replies.json"
    forced.write_text(json.dumps([{"marker": m, "reply": r} for _, m, _, r in all_turns]))
    env = worker_env({**os.environ, "MLXCTL_TEST_FORCE_REPLIES": str(forced)})
    modes: tuple[str, ...] = ("off", "auto", "copy")
    flags: dict[str, list[str]] = {mode: ["--speculative", mode] for mode in modes}
    if args.draft_model:
        draft = str(model) if args.draft_model == "same" else args.draft_model
        modes += ("draft",)
        flags["draft"] = ["--speculative", "draft", "--draft-model", draft]
    if args.mtp:
        modes += ("mtp",)
        flags["mtp"] = ["--speculative", "mtp"]
    workers = {}
    try:
        for mode in modes:
            workers[mode] = Worker(model, flags[mode], env, work, f"spec-{mode}")
            started = workers[mode].server.start(args.startup_timeout)
            print(f"{mode} worker healthy in {started:.1f}s", flush=True)
        if args.warmup_tokens:
            firsts = {kind: messages for kind, _, messages, _ in reversed(all_turns)}
            for mode in modes:
                began = time.perf_counter()
                for messages in firsts.values():
                    ask(workers[mode].base_url, messages, args.warmup_tokens)
                print(f"{mode} warm-up {time.perf_counter() - began:.1f}s", flush=True)
        rows: dict[str, dict[str, list]] = {}
        runs = 0
        for kind, _, messages, _ in all_turns:
            row = rows.setdefault(kind, {"identical": [], "tokens": []})
            for _ in range(args.repeats):
                replies = {}
                first, runs = runs % len(modes), runs + 1
                # Each goes first in turn, across kinds too: on MLX CUDA the first worker to
                # verify a new size compiles its kernels for all (they share the kernel cache).
                for mode in modes[first:] + modes[:first]:
                    message, figures = ask(workers[mode].base_url, messages, args.max_tokens)
                    replies[mode] = same_parts(message)
                    row.setdefault(f"{mode} tps", []).append(figures["tokens_per_second"])
                    drafts = figures.get("drafts") or {}
                    row.setdefault(f"{mode} drafted", []).append(drafts.get("drafted", 0))
                    row.setdefault(f"{mode} accepted", []).append(drafts.get("accepted", 0))
                    row.setdefault(f"{mode} per step", []).append(drafts.get("per_step", 0.0))
                row["tokens"].append(figures["completion_tokens"])
                plain = row["off tps"][-1]
                for mode in modes[1:]:  # back to back: a ratio drifts less than a speed
                    row.setdefault(f"{mode} ratio", []).append(row[f"{mode} tps"][-1] / plain)
                row["identical"].append(len(set(replies.values())) == 1)
        learned = {
            mode: httpx.get(workers[mode].base_url + "/v1/status", headers=HEADERS).json()[
                "scheduler"
            ]["speculative"]
            for mode in modes[1:]
        }
        edit = next(m for k, _, m, _ in all_turns if k == "edit")
        batched = {
            mode: concurrent(workers[mode].base_url, edit, args.sessions, args.max_tokens)
            for mode in ("off", "auto")
        }
    finally:
        for handle in workers.values():
            handle.stop()
    report(args, rows, batched, modes)
    print(
        "\nThe cost model, a verify cycle feeding n tokens over a plain cycle (longest context "
        "seen), and where a verify cycle's time went (the forward, sampling the positions, the "
        "rest of the cycle):"
    )
    for mode, figures in learned.items():
        print(f"- {mode}: {figures['cost_ratios']}; measured {figures['measured']}")
    return 0


EXTRA = ("draft", "mtp")  # modes with columns of their own where they ran


def extra_columns(mode: str) -> str:
    return f"| {mode} tok/s | {mode}/plain | {mode} tokens/verify | {mode} accepted "


def report(args, rows: dict, batched: dict, modes: tuple[str, ...]) -> None:
    def med(xs):
        return statistics.median(xs) if xs else 0.0

    extra = [m for m in EXTRA if m in modes]
    what = (
        f"{args.model}"
        if args.model
        else f"tiny {args.family} model{' with an MTP head' * args.mtp} ({args.layers} layers, "
        f"hidden {args.hidden}, context {args.context}), CPU"
    )
    print(
        f"\n{what}; {args.repeats} runs per turn; decode tok/s is the worker's own "
        "(first token to the end of the reply), median over the kind's turns and runs; the "
        "ratios are medians of each run's back-to-back ratio\n"
    )
    print(
        "| turn kind | turns | reply tokens | plain tok/s | auto tok/s | auto/plain | copy tok/s "
        "| copy/plain | auto tokens/verify | auto accepted | copy tokens/verify | copy accepted "
        + "".join(extra_columns(m) for m in extra)
        + "| identical |"
    )
    print("| --- | " + "---: | " * (11 + 4 * len(extra)) + "--- |")
    for kind, row in rows.items():
        plain, auto, copy = (med(row[f"{m} tps"]) for m in ("off", "auto", "copy"))

        def accepted(mode: str, row=row) -> str:
            drafted = sum(row[f"{mode} drafted"])
            return f"{sum(row[f'{mode} accepted']) / drafted:.0%}" if drafted else "-"

        cells = [
            kind,
            str(len(row["identical"]) // args.repeats),
            f"{med(row['tokens']):.0f}",
            f"{plain:.1f}",
            f"{auto:.1f}",
            f"{med(row['auto ratio']):.2f}x",
            f"{copy:.1f}",
            f"{med(row['copy ratio']):.2f}x",
            f"{med(row['auto per step']):.2f}",
            accepted("auto"),
            f"{med(row['copy per step']):.2f}",
            accepted("copy"),
        ]
        for mode in extra:
            cells += [
                f"{med(row[f'{mode} tps']):.1f}",
                f"{med(row[f'{mode} ratio']):.2f}x",
                f"{med(row[f'{mode} per step']):.2f}",
                accepted(mode),
            ]
        cells.append("yes" if all(row["identical"]) else "NO")
        print("| " + " | ".join(cells) + " |")
    off, auto = batched["off"], batched["auto"]
    print(
        f"\n{args.sessions} concurrent edit turns (a batch decodes plainly): aggregate output "
        f"{off:.1f} tok/s plain, {auto:.1f} tok/s auto ({auto / off:.2f}x)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
