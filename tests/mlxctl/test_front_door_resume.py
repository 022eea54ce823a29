"""The door's half of a resumed stream as pure logic over SSE bytes: marks stripped and kept,
a replay deduplicated against what the client has (straddling deltas trimmed, blocks already
started or stopped dropped, ids the client knows kept)."""

from __future__ import annotations

import json

from mlxctl.front_door.resume import MAX_RESUMES, StreamResume
from server.resume_wire import MARK_PREFIX, RESUME_KEY


def mark(*ids: int) -> bytes:
    return (MARK_PREFIX + ",".join(map(str, ids)) + "\n\n").encode()


def anthropic(kind: str, **fields) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def text_delta(index: int, text: str) -> bytes:
    delta = {"type": "text_delta", "text": text}
    return anthropic("content_block_delta", index=index, delta=delta)


def events(out: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b"data: {")]


START = anthropic("message_start", message={"id": "msg_first"})
BLOCK = anthropic("content_block_start", index=0, content_block={"type": "text", "text": ""})


def test_marks_are_stripped_kept_and_sent_with_the_resume():
    door = StreamResume("/v1/messages")
    out = door.feed(START + mark(5) + BLOCK + text_delta(0, "Hel")[:20])  # an event cut short
    assert b"mlxctl" not in out and [e["type"] for e in events(out)] == [
        "message_start",
        "content_block_start",
    ]
    out = door.feed(text_delta(0, "Hel")[20:] + mark(6, 7))
    assert events(out)[0]["delta"]["text"] == "Hel"
    assert door.tokens == [5, 6, 7] and door.can_resume()
    door.begin_attempt()
    assert door.tokens == [5, 6, 7]  # known until the replay marks them again
    body = json.loads(door.body(b'{"model": "m", "stream": true}'))
    assert body == {"model": "m", "stream": True, RESUME_KEY: [5, 6, 7]}


def test_an_anthropic_replay_forwards_only_what_the_client_lacks():
    door = StreamResume("/v1/messages")
    thinking = anthropic("content_block_start", index=0, content_block={"type": "thinking"})
    think = anthropic("content_block_delta", index=0, delta={"type": "thinking_delta",
                                                              "thinking": "hmm"})  # fmt: skip
    stop0 = anthropic("content_block_stop", index=0)
    text_block = BLOCK.replace(b'"index": 0', b'"index": 1')
    door.feed(START + mark(1) + thinking + think + mark(2) + stop0 + text_block)
    door.feed(mark(3) + text_delta(1, "Hello"))
    door.begin_attempt()
    replay = (
        anthropic("message_start", message={"id": "msg_second"})
        + mark(1, 2, 3)
        + thinking
        + think
        + stop0
        + text_block
        + text_delta(1, "Hel")
        + text_delta(1, "lo, w")  # straddles: the client has "Hello"
        + mark(4)
        + text_delta(1, "orld")
        + anthropic("content_block_stop", index=1)
        + anthropic("message_stop")
    )
    out = events(door.feed(replay))
    assert [e["type"] for e in out] == [
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_stop",
    ]
    assert [e["delta"]["text"] for e in out[:2]] == [", w", "orld"]
    assert door.tokens == [1, 2, 3, 4] and not door.can_resume()  # it ended


def test_an_openai_replay_keeps_the_first_id_and_trims_content_and_arguments():
    def chunk(cid: str, delta: dict, finish=None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        data = {"id": cid, "created": 1 if cid == "a" else 2, "choices": [choice]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": ""}}  # fmt: skip

    def args(text: str) -> dict:
        return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}

    door = StreamResume("/v1/chat/completions")
    door.feed(chunk("a", {"role": "assistant", "content": ""}) + mark(1))
    door.feed(chunk("a", {"content": "Hi"}) + mark(2) + chunk("a", {"tool_calls": [call]}))
    door.feed(mark(3) + chunk("a", args('{"ci')))
    door.begin_attempt()
    replay = (
        chunk("b", {"role": "assistant", "content": ""})
        + mark(1, 2, 3)
        + chunk("b", {"content": "Hi"})
        + chunk("b", {"tool_calls": [{**call, "id": "call_2"}]})
        + chunk("b", args('{"city'))
        + chunk("b", args('": "x"}'))
        + chunk("b", {}, "tool_calls")
        + b"data: [DONE]\n\n"
    )
    out = door.feed(replay)
    got = events(out)
    assert all(c["id"] == "a" and c["created"] == 1 for c in got)
    deltas = [c["choices"][0]["delta"] for c in got]
    assert deltas == [args("ty"), args('": "x"}'), {}]
    assert got[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert out.endswith(b"data: [DONE]\n\n")


def test_a_stream_resumes_at_most_twice():
    door = StreamResume("/v1/chat/completions")
    for _ in range(MAX_RESUMES):
        assert door.can_resume()
        door.begin_attempt()
    assert not door.can_resume()
