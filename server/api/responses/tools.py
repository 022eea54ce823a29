"""Responses tools onto the internal function tools, and the model's calls back onto items.

`function` tools pass through; a `custom` (freeform) tool becomes a function of one string,
`input`; a `namespace` groups tools under a prefix and is flattened (`functions`, the model's
default namespace, keeps its tools' own names); hosted tools (web search, file search, ...) run
on OpenAI's side, so they are dropped with one log line, never refused. Codex may send its tools
as an `additional_tools` input item instead of `tools`: they join `tools`, in order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from server.errors import BadRequest
from server.request import ToolCall

log = logging.getLogger("server.api")

# The one parameter a custom tool's input travels in (what the model writes for it).
CUSTOM_INPUT = "input"
# The namespace a model's plain tools live in (`functions.exec`): its tools keep their names, so
# they render as the same tools sent in `tools` would (and the prefix cache sees no change).
DEFAULT_NAMESPACE = "functions"


@dataclass
class ToolInfo:
    kind: str  # "function" or "custom"
    name: str  # the client's name
    namespace: str | None = None


@dataclass
class ToolSet:
    """The request's usable tools as function tools, and what each flat name stands for."""

    functions: list[dict[str, Any]] = field(default_factory=list)
    by_flat: dict[str, ToolInfo] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def flat_name(name: str, namespace: Any, param: str = "tools") -> str:
    """A namespaced tool's name as the model sees it (one flat list of tools)."""
    if namespace is not None and not isinstance(namespace, str):
        raise BadRequest(f"a namespace must be a string (got {namespace!r})", param=param)
    if not namespace or namespace == DEFAULT_NAMESPACE or name.startswith(namespace):
        return name
    return f"{namespace}__{name}"


def _custom_parameters(tool: dict[str, Any], where: str) -> tuple[dict, str]:
    """A custom tool's input as a function parameter; a regex grammar becomes its pattern (the
    constrained decoder enforces it); a Lark grammar is shown to the model, not enforced."""
    fmt = tool.get("format") or {"type": "text"}
    if not isinstance(fmt, dict):
        raise BadRequest(f"{where}.format must be an object", param="tools")
    text: dict[str, Any] = {"type": "string", "description": "The tool's whole input, as text."}
    note = ""
    if fmt.get("type") == "grammar":
        syntax, definition = fmt.get("syntax"), fmt.get("definition")
        if not isinstance(definition, str) or syntax not in ("lark", "regex"):
            raise BadRequest(
                f"{where}.format: a grammar needs a syntax (lark or regex) and a definition",
                param="tools",
            )
        if syntax == "regex":
            text["pattern"] = f"^(?:{definition})$"
        else:
            note = f"\n\nThe input must follow this Lark grammar:\n{definition}"
    elif fmt.get("type") != "text":
        raise BadRequest(f"{where}.format: unknown type {fmt.get('type')!r}", param="tools")
    schema = {
        "type": "object",
        "properties": {CUSTOM_INPUT: text},
        "required": [CUSTOM_INPUT],
        "additionalProperties": False,
    }
    return schema, note


def _add(out: ToolSet, tool: dict[str, Any], where: str, namespace: str | None = None) -> None:
    kind = tool.get("type")
    name = tool.get("name")
    if kind in ("function", "custom") and (not isinstance(name, str) or not name):
        raise BadRequest(f"{where}: a {kind} tool needs a name", param="tools")
    if kind == "function":
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise BadRequest(f"{where}.parameters must be a JSON schema object", param="tools")
        description = tool.get("description") or ""
    elif kind == "custom":
        parameters, note = _custom_parameters(tool, where)
        description = (tool.get("description") or "") + note
    elif kind == "namespace":
        inner = tool.get("tools")
        if not isinstance(name, str) or not name or not isinstance(inner, list):
            raise BadRequest(f"{where}: a namespace needs a name and a tools list", param="tools")
        for i, sub in enumerate(inner):
            if not isinstance(sub, dict) or sub.get("type") not in ("function", "custom"):
                raise BadRequest(
                    f"{where}.tools[{i}]: a namespace holds function and custom tools",
                    param="tools",
                )
            _add(out, sub, f"{where}.tools[{i}]", None if name == DEFAULT_NAMESPACE else name)
        return
    else:
        out.dropped.append(str(kind))  # hosted: it runs on OpenAI's servers, not here
        return
    assert isinstance(name, str) and isinstance(kind, str)  # checked above for both kinds
    flat = flat_name(name, namespace)
    if flat in out.by_flat:
        raise BadRequest(f"{where}: two tools are named {flat!r}", param="tools")
    out.by_flat[flat] = ToolInfo(kind, name, namespace)
    function = {"name": flat, "description": description, "parameters": parameters}
    out.functions.append({"type": "function", "function": function})


def _listed(tools: list[Any] | None, items: Any) -> list[tuple[str, Any]]:
    """(where, tool) of `tools`, then of each `additional_tools` input item (Codex's way of
    sending its tools); an item's tool repeated exactly (a resent or chained item) counts once."""
    out = [(f"tools[{i}]", tool) for i, tool in enumerate(tools or [])]
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict) or item.get("type") != "additional_tools":
            continue
        extra = item.get("tools")
        if not isinstance(extra, list):
            raise BadRequest(
                f"input[{i}]: an additional_tools item needs a tools list", param="input"
            )
        out += [
            (f"input[{i}].tools[{j}]", tool)
            for j, tool in enumerate(extra)
            if all(tool != seen for _, seen in out)
        ]
    return out


def tool_set(tools: list[dict[str, Any]] | None, items: Any = None) -> ToolSet:
    """The tools of `tools` and of the `additional_tools` items among the input `items`."""
    out = ToolSet()
    for where, tool in _listed(tools, items):
        if not isinstance(tool, dict):
            raise BadRequest(f"{where} must be an object", param="tools")
        _add(out, tool, where)
    if out.dropped:
        log.info("hosted tools dropped (they run on OpenAI's side): %s", ", ".join(out.dropped))
    return out


def _allowed(tools: ToolSet, listed: Any) -> ToolSet:
    """`allowed_tools`: the same tools narrowed to those listed (hosted ones skipped)."""
    if not isinstance(listed, list):
        raise BadRequest("tool_choice.tools must be a list", param="tool_choice")
    keep = {
        flat_name(t["name"], t.get("namespace"), param="tool_choice")
        for t in listed
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    }
    narrowed = ToolSet(dropped=tools.dropped)
    for fn in tools.functions:
        flat = fn["function"]["name"]
        if flat in keep:
            narrowed.functions.append(fn)
            narrowed.by_flat[flat] = tools.by_flat[flat]
    return narrowed


def tool_choice(choice: Any, tools: ToolSet) -> tuple[str | None, ToolSet]:
    """The internal tool_choice ("auto", "none", "required" or a flat name) and the tools."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice, tools
    if not isinstance(choice, dict):
        raise BadRequest(
            "tool_choice must be auto, none, required or an object", param="tool_choice"
        )
    kind = choice.get("type")
    if kind in ("function", "custom"):
        if not isinstance(choice.get("name"), str):
            raise BadRequest(f"tool_choice of type {kind!r} needs a name", param="tool_choice")
        flat = flat_name(choice["name"], choice.get("namespace"), param="tool_choice")
        if flat not in tools.by_flat:
            raise BadRequest(f"tool_choice names an unknown tool: {flat!r}", param="tool_choice")
        return flat, tools
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise BadRequest("tool_choice.mode must be auto or required", param="tool_choice")
        return mode, _allowed(tools, choice.get("tools"))
    # A hosted tool (web_search, file_search, ...): nothing here can run it.
    raise BadRequest(
        f"tool_choice {kind!r} names a hosted tool this server does not run", param="tool_choice"
    )


def call_arguments(raw: Any, where: str) -> dict[str, Any]:
    """A function_call item's `arguments` (JSON text) as the object templates render."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise BadRequest(f"{where}.arguments must be a JSON string", param="input")
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        raise BadRequest(f"{where}.arguments is not valid JSON", param="input") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{where}.arguments must be a JSON object", param="input")
    return value


def output_item(call: ToolCall, tools: ToolSet, item_id: str, status: str = "completed") -> dict:
    """The function_call or custom_tool_call item for a call the model made."""
    info = tools.by_flat.get(call.name, ToolInfo("function", call.name))
    if info.kind == "custom":
        item = {
            "type": "custom_tool_call",
            "id": item_id,
            "call_id": call.id,
            "name": info.name,
            "input": custom_input(call.arguments),
        }
    else:
        item = {
            "type": "function_call",
            "id": item_id,
            "call_id": call.id,
            "name": info.name,
            "arguments": json.dumps(call.arguments),
            "status": status,
        }
    if info.namespace:
        item["namespace"] = info.namespace
    return item


def custom_input(arguments: dict[str, Any]) -> str:
    """What the model wrote for a custom tool (its `input`; other shapes as JSON text)."""
    value = arguments.get(CUSTOM_INPUT)
    if isinstance(value, str) and len(arguments) == 1:
        return value
    return json.dumps(arguments)


def is_custom(call_name: str, tools: ToolSet) -> bool:
    info = tools.by_flat.get(call_name)
    return info is not None and info.kind == "custom"
