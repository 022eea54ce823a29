"""Bad inputs get the right status and error type, in each protocol's own shape."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.fixtures_worker import API_KEY, MAX_BODY

HELLO = [{"role": "user", "content": "Say hello."}]
OK_OPENAI = {"model": "claude-x", "messages": HELLO, "max_tokens": 2}
OK_ANTHROPIC = {"model": "claude-x", "messages": HELLO, "max_tokens": 2}
AUTH = {"x-api-key": API_KEY}
EVIL_HOST = {**AUTH, "host": "evil.example:8080"}
EVIL_ORIGIN = {**AUTH, "origin": "http://evil.example"}
NULL_ORIGIN = {**AUTH, "origin": "null"}
UNKNOWN_TOOL_RESULT = [
    {"role": "user", "content": "Run it."},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}],
    },
]
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}

CASES = [
    # (id, method, path, body or raw bytes, headers, status, error type)
    (
        "oa-bad-json",
        "POST",
        "/v1/chat/completions",
        b"{not json",
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "oa-no-messages",
        "POST",
        "/v1/chat/completions",
        {"model": "m"},
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "oa-empty-messages",
        "POST",
        "/v1/chat/completions",
        {**OK_OPENAI, "messages": []},
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "oa-bad-role",
        "POST",
        "/v1/chat/completions",
        {**OK_OPENAI, "messages": [{"role": "wizard", "content": "x"}]},
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "oa-bad-temperature",
        "POST",
        "/v1/chat/completions",
        {**OK_OPENAI, "temperature": 7},
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "oa-bad-tool-args",
        "POST",
        "/v1/chat/completions",
        {
            **OK_OPENAI,
            "messages": HELLO
            + [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{x"},
                        }
                    ],
                }
            ],
        },
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "oa-unknown-model",
        "POST",
        "/v1/chat/completions",
        {**OK_OPENAI, "model": "gpt-9"},
        AUTH,
        404,
        "not_found_error",
    ),
    ("oa-no-key", "POST", "/v1/chat/completions", OK_OPENAI, {}, 401, "authentication_error"),
    (
        "oa-wrong-bearer",
        "POST",
        "/v1/chat/completions",
        OK_OPENAI,
        {"authorization": "Bearer nope"},
        401,
        "authentication_error",
    ),
    ("oa-unknown-path", "GET", "/v1/nothing", None, AUTH, 404, "not_found_error"),
    (
        "oa-too-large",
        "POST",
        "/v1/chat/completions",
        b"x" * (MAX_BODY + 1),
        AUTH,
        413,
        "invalid_request_error",
    ),
    ("an-bad-json", "POST", "/v1/messages", b"[1,", AUTH, 400, "invalid_request_error"),
    (
        "an-no-max-tokens",
        "POST",
        "/v1/messages",
        {"model": "claude-x", "messages": HELLO},
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "an-bad-block",
        "POST",
        "/v1/messages",
        {**OK_ANTHROPIC, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "an-tool-choice-unknown",
        "POST",
        "/v1/messages",
        {
            **OK_ANTHROPIC,
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "g"},
        },
        AUTH,
        400,
        "invalid_request_error",
    ),
    (
        "an-unknown-model",
        "POST",
        "/v1/messages",
        {**OK_ANTHROPIC, "model": "gpt-9"},
        AUTH,
        404,
        "not_found_error",
    ),
    (
        "an-wrong-key",
        "POST",
        "/v1/messages",
        OK_ANTHROPIC,
        {"x-api-key": "nope"},
        401,
        "authentication_error",
    ),
    (
        "an-count-no-key",
        "POST",
        "/v1/messages/count_tokens",
        OK_ANTHROPIC,
        {},
        401,
        "authentication_error",
    ),
    (
        "an-unknown-tool-use-id",
        "POST",
        "/v1/messages",
        {**OK_ANTHROPIC, "messages": UNKNOWN_TOOL_RESULT},
        AUTH,
        400,
        "invalid_request_error",
    ),
    ("an-unknown-path", "POST", "/v1/messages/nothing", OK_ANTHROPIC, AUTH, 404, "not_found_error"),
    ("an-too-large", "POST", "/v1/messages", b"x" * (MAX_BODY + 1), AUTH, 413, "request_too_large"),
    # DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends its own Host and Origin.
    (
        "oa-rebound-host",
        "POST",
        "/v1/chat/completions",
        OK_OPENAI,
        EVIL_HOST,
        403,
        "permission_error",
    ),
    ("an-rebound-host", "POST", "/v1/messages", OK_ANTHROPIC, EVIL_HOST, 403, "permission_error"),
    ("status-rebound-host", "GET", "/v1/status", None, EVIL_HOST, 403, "permission_error"),
    ("cache-rebound-host", "DELETE", "/v1/cache", None, EVIL_HOST, 403, "permission_error"),
    (
        "an-foreign-origin",
        "POST",
        "/v1/messages",
        OK_ANTHROPIC,
        EVIL_ORIGIN,
        403,
        "permission_error",
    ),
    (
        "oa-null-origin",
        "POST",
        "/v1/chat/completions",
        OK_OPENAI,
        NULL_ORIGIN,
        403,
        "permission_error",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "error_type"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bad_input(worker, method, path, body, headers, status, error_type):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    if body is None:
        kwargs = {}
    r = httpx.request(
        method,
        worker.base_url + path,
        headers={"content-type": "application/json", **headers},
        timeout=30,
        **kwargs,
    )
    assert r.status_code == status, r.text
    payload = r.json()
    if path.startswith("/v1/messages"):
        assert payload["type"] == "error"
    assert payload["error"]["type"] == error_type
    assert "Traceback" not in r.text and payload["error"]["message"]


def test_loopback_names_and_local_origins_are_served(worker):
    port = worker.base_url.rsplit(":", 1)[1]
    for headers in (
        {"host": f"localhost:{port}"},
        {"host": f"[::1]:{port}"},
        {"origin": f"http://localhost:{port}"},
        {"origin": "http://127.0.0.1:3000"},
    ):
        assert httpx.get(worker.base_url + "/health", headers=headers).status_code == 200, headers


def test_allowed_hosts_config_reaches_the_worker_and_extends_the_names():
    from mlxctl import config
    from server.edge.contract import worker_argv
    from server.settings import Settings, host_allowed

    values = {**config.load(), "allowed_hosts": "my.box,other.box"}
    argv = worker_argv("m", "127.0.0.1", 1, **config.worker_options(values))
    assert argv[argv.index("--allowed-hosts") + 1] == "my.box,other.box"
    settings = Settings(model="m", model_path="m", allowed_hosts=["my.box"])
    assert host_allowed("my.box", settings) and not host_allowed("evil.example", settings)
    assert host_allowed("anything", Settings(model="m", model_path="m", allowed_hosts=["*"]))
    assert host_allowed("192.168.1.5", Settings(model="m", model_path="m", host="0.0.0.0"))


def test_health_needs_no_key(worker):
    assert httpx.get(worker.base_url + "/health").json() == {"status": "ok"}


def test_context_length_is_a_400_naming_both_numbers(worker, anthropic_client, openai_client):
    import anthropic
    import openai

    long_text = " hello" * 40_000
    with pytest.raises(anthropic.BadRequestError) as a:
        anthropic_client.messages.create(
            model="claude-x",
            max_tokens=8,
            stream=True,
            messages=[{"role": "user", "content": long_text}],
        )
    message = a.value.body["error"]["message"]
    assert "32768" in message and "tokens" in message
    prompt_tokens = int(message.split("prompt is too long: ")[1].split()[0])
    assert prompt_tokens > 32768
    with pytest.raises(openai.BadRequestError) as o:
        openai_client.chat.completions.create(
            model="claude-x", max_tokens=8, messages=[{"role": "user", "content": long_text}]
        )
    assert o.value.code == "context_length_exceeded"
    assert str(prompt_tokens) in o.value.message and "32768" in o.value.message


def test_full_queue_is_429_or_529_with_retry_after(worker):
    """One request runs and --max-queue 2 wait; the next is turned away at once."""
    long = {"role": "user", "content": " hello" * 6000}
    body = {"model": "claude-x", "max_tokens": 8, "messages": [long], "stream": True}
    with httpx.Client(base_url=worker.base_url, headers=AUTH, timeout=60) as client:
        streams = []
        try:
            for _ in range(3):
                s = client.stream("POST", "/v1/messages", json=body)
                streams.append(s)
                assert s.__enter__().status_code == 200
            r = client.post("/v1/messages", json=body)
            assert r.status_code == 529
            assert r.json()["error"]["type"] == "overloaded_error"
            assert int(r.headers["retry-after"]) >= 1
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 429
            assert r.json()["error"]["type"] == "rate_limit_error"
            assert "retry-after" in r.headers
        finally:
            for s in streams:
                s.__exit__(None, None, None)
        # The clients left: their jobs stop promptly and the worker is free again.
        deadline = time.monotonic() + 10
        while client_status(worker)["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client_status(worker)["queue_depth"] == 0


def client_status(worker) -> dict:
    return httpx.get(worker.base_url + "/v1/status", headers=AUTH).json()


def test_tool_call_text_that_does_not_parse_is_text_not_500(worker):
    # Forced opening for a named tool: the tiny model's continuation is whatever it is; the
    # reply must still be a well-formed 200 with text or a tool call.
    body = {
        "model": "claude-x",
        "max_tokens": 16,
        "temperature": 0,
        "messages": HELLO,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "required",
    }
    r = httpx.post(worker.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["content"] or message.get("tool_calls")
    json.dumps(message)


def test_image_inside_a_tool_result_is_replaced_not_refused(worker):
    messages = [
        {"role": "user", "content": "Take a screenshot."},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [IMAGE]}],
        },
    ]
    body = {
        "model": "claude-x",
        "messages": messages,
        "tools": [{"name": "shot", "input_schema": {"type": "object"}}],
    }
    r = httpx.post(worker.base_url + "/v1/messages/count_tokens", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["input_tokens"] > 0
