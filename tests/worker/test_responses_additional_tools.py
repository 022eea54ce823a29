"""Codex's `additional_tools` input item on a real worker: the tools it carries are offered as
those of `tools` are, rendered the same (the same prompt, so the same prefix cache), and the
model's calls come back as items Codex maps onto them.

Codex 0.171 sends its tools this way under a model its catalog marks `use_responses_lite`
(gpt-5.6-*, gpt-6-*; not gpt-5.5): a `functions` namespace whose main tool is a freeform
JavaScript `exec`, then other namespaces, and no `tools` field at all.
"""

from __future__ import annotations

import json

import httpx

from tests.fixtures_worker import REPO_ROOT
from tests.worker.test_responses import HEADERS, MODEL, client_for

# Codex's first request under a model its catalog marks `use_responses_lite` (fixtures README).
LITE = REPO_ROOT / "tests" / "fixtures" / "codex-0.171.0" / "responses-lite" / "001.json"

EXEC = {
    "type": "custom",
    "name": "exec",
    "description": "Run JavaScript code to orchestrate/compose tool calls.",
    "format": {"type": "text"},
}
WAIT = {
    "type": "function",
    "name": "wait",
    "description": "Waits on a yielded `exec` cell and returns new output or completion.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"cell_id": {"type": "string"}, "terminate": {"type": "boolean"}},
        "required": ["cell_id"],
        "additionalProperties": False,
    },
}
ADDITIONAL = {
    "type": "additional_tools",
    "tools": [{"type": "namespace", "name": "functions", "tools": [EXEC, WAIT]}],
}
CONVERSATION = [
    {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "Be Codex."}],
    },
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List files."}]},
]


def codex_body(**extra) -> dict:
    """A body shaped like Codex's: the tools item leads `input`, no `tools` field."""
    return {
        "model": MODEL,
        "input": [ADDITIONAL, *CONVERSATION],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
        **extra,
    }


def input_tokens(worker, body: dict) -> int:
    keep = ("model", "input", "tools", "tool_choice", "reasoning")
    r = httpx.post(
        worker.base_url + "/v1/responses/input_tokens",
        json={k: v for k, v in body.items() if k in keep},
        headers=HEADERS,
    )
    assert r.status_code == 200, r.text
    return r.json()["input_tokens"]


def test_additional_tools_render_as_the_same_tools_sent_in_tools(worker):
    as_item = input_tokens(worker, codex_body())
    as_tools = input_tokens(worker, codex_body(input=CONVERSATION, tools=[EXEC, WAIT]))
    without = input_tokens(worker, codex_body(input=CONVERSATION))
    assert as_item == as_tools > without


def test_codex_shaped_request_is_served_and_a_forced_exec_comes_back_as_its_call(worker):
    r = httpx.post(
        worker.base_url + "/v1/responses",
        json=codex_body(max_output_tokens=8),
        headers=HEADERS,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    with client_for(worker) as client:
        forced = client.responses.create(
            **codex_body(tool_choice={"type": "custom", "name": "exec"}, max_output_tokens=32)
        )
    [call] = [item for item in forced.output if item.type == "custom_tool_call"]
    assert call.name == "exec" and getattr(call, "namespace", None) is None
    # The call and its output go back with the same item leading the input.
    history = [
        *codex_body()["input"],
        {"type": "custom_tool_call", "call_id": call.call_id, "name": "exec", "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "a.txt"},
    ]
    with client_for(worker) as client:
        again = client.responses.create(**codex_body(input=history, max_output_tokens=4))
    assert again.status in ("completed", "incomplete")


def test_a_malformed_additional_tools_item_is_a_400_naming_it(worker):
    body = codex_body(input=[{"type": "additional_tools", "tools": "exec"}, *CONVERSATION])
    r = httpx.post(worker.base_url + "/v1/responses", json=body, headers=HEADERS)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "input" and "input[0]: an additional_tools item" in error["message"]


def test_codexs_own_request_renders_its_item_as_the_same_tools_in_tools(worker):
    body = {**json.loads(LITE.read_text())["body"], "model": MODEL}
    [item] = [i for i in body["input"] if i.get("type") == "additional_tools"]
    # The same tools as Codex sends them otherwise: the default namespace's at the top.
    tools = []
    for tool in item["tools"]:
        default = tool["type"] == "namespace" and tool["name"] == "functions"
        tools += tool["tools"] if default else [tool]
    as_tools = {**body, "input": [i for i in body["input"] if i is not item], "tools": tools}
    assert input_tokens(worker, body) == input_tokens(worker, as_tools)
    r = httpx.post(
        worker.base_url + "/v1/responses",
        json={**body, "max_output_tokens": 8},
        headers=HEADERS,
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert "response.completed" in r.text or "response.incomplete" in r.text
