"""The agentic bench's conversation: a captured Claude Code request's system prompt and tools,
then turns of an assistant tool_use and a user tool_result of generated text (also as OpenAI
chat)."""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "claude-code-2.1.328"
FIXTURE_FILE = "fix-notes-session/001.json"
BILLING_PREFIX = "x-anthropic-billing-header:"


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
            msg: dict[str, Any] = {"role": "assistant", "content": text}
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
