"""The door's half of a resumed stream as pure logic over SSE bytes: marks stripped and kept,
a replay deduplicated against what the client has (straddling deltas trimmed, blocks already
started or stopped dropped, ids the client knows kept)."""

from __future__ import annotations

import json

from mlxctl.front_door.resume import MAX_RESUMES, StreamResume
from server.edge.resume_wire import MARK_PREFIX, RESUME_KEY, RESUME_RESPONSE_KEY


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


class Responses:
    """A Responses stream's events as the worker writes them: numbered from 0, under the ids
    one worker minted (`tag` tells the workers apart)."""

    def __init__(self, tag: str):
        self.tag, self.seq = tag, 0

    def event(self, kind: str, **fields) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    def response(self, status: str, output: list) -> dict:
        return {"id": f"resp_{self.tag}", "created_at": ord(self.tag), "status": status,
                "output": output}  # fmt: skip

    def start(self) -> bytes:
        said = self.response("in_progress", [])
        return self.event("response.created", response=said) + self.event(
            "response.in_progress", response=said
        )

    def item(self, kind: str, index: int, done: bool = False, **fields) -> bytes:
        item = {"type": kind, "id": f"{kind[:3]}_{self.tag}{index}", **fields}
        name = "response.output_item.done" if done else "response.output_item.added"
        return self.event(name, output_index=index, item=item)

    def on(self, kind: str, index: int, **fields) -> bytes:
        """An event of output item `index` (its id as this worker minted it)."""
        return self.event(kind, output_index=index, item_id=f"xxx_{self.tag}{index}", **fields)


def test_a_responses_replay_goes_on_under_the_clients_ids_and_numbers():
    door = StreamResume("/v1/responses")
    first = Responses("a")
    door.feed(first.start() + mark(1) + first.item("reasoning", 0))
    door.feed(first.on("response.reasoning_summary_part.added", 0, summary_index=0))
    door.feed(first.on("response.reasoning_summary_text.delta", 0, summary_index=0, delta="hmm"))
    door.feed(mark(2) + first.on("response.reasoning_summary_text.done", 0, summary_index=0))
    door.feed(first.item("reasoning", 0, done=True) + mark(3) + first.item("message", 1))
    door.feed(first.on("response.content_part.added", 1, content_index=0))
    door.feed(first.on("response.output_text.delta", 1, content_index=0, delta="Hello"))
    assert door.can_resume()
    door.begin_attempt()
    body = json.loads(door.body(b'{"model": "m", "stream": true}'))
    assert body[RESUME_KEY] == [1, 2, 3]
    assert body[RESUME_RESPONSE_KEY] == {"id": "resp_a", "created_at": ord("a"),
                                         "items": ["rea_a0", "mes_a1"]}  # fmt: skip
    again = Responses("b")  # a worker that minted ids of its own
    replay = again.start() + mark(1, 2, 3) + again.item("reasoning", 0)
    replay += again.on("response.reasoning_summary_part.added", 0, summary_index=0)
    replay += again.on("response.reasoning_summary_text.delta", 0, summary_index=0, delta="hm")
    replay += again.on("response.reasoning_summary_text.delta", 0, summary_index=0, delta="m")
    replay += again.on("response.reasoning_summary_text.done", 0, summary_index=0, text="hmm")
    replay += again.item("reasoning", 0, done=True) + again.item("message", 1)
    replay += again.on("response.content_part.added", 1, content_index=0)
    replay += again.on("response.output_text.delta", 1, content_index=0, delta="Hel")
    replay += again.on("response.output_text.delta", 1, content_index=0, delta="lo, w")
    replay += mark(4) + again.on("response.output_text.delta", 1, content_index=0, delta="orld")
    replay += again.on("response.output_text.done", 1, content_index=0, text="Hello, world")
    replay += again.item("message", 1, done=True)
    replay += again.event("response.in_progress", response=again.response("in_progress", []))
    output = [{"type": "reasoning", "id": "rea_b0"}, {"type": "message", "id": "mes_b1"}]
    replay += again.event("response.completed", response=again.response("completed", output))
    out = events(door.feed(replay))
    assert [(e["type"], e["sequence_number"]) for e in out] == [
        ("response.output_text.delta", 10),
        ("response.output_text.delta", 11),
        ("response.output_text.done", 12),
        ("response.output_item.done", 13),
        ("response.in_progress", 14),  # the worker's keep-alive goes out
        ("response.completed", 15),
    ]
    assert [e["delta"] for e in out[:2]] == [", w", "orld"]
    assert {e["item_id"] for e in out[:3]} == {"mes_a1"} and out[3]["item"]["id"] == "mes_a1"
    final = out[-1]["response"]
    assert (final["id"], final["created_at"]) == ("resp_a", ord("a"))
    assert [o["id"] for o in final["output"]] == ["rea_a0", "mes_a1"]
    assert out[4]["response"]["id"] == "resp_a"
    assert door.tokens == [1, 2, 3, 4] and not door.can_resume()  # it ended


def test_a_responses_replay_trims_call_arguments_and_announces_a_new_item():
    door = StreamResume("/v1/responses")
    first = Responses("a")
    door.feed(first.start() + mark(1) + first.item("function_call", 0, arguments=""))
    door.feed(mark(2) + first.on("response.function_call_arguments.delta", 0, delta='{"ci'))
    door.begin_attempt()
    again = Responses("b")
    replay = again.start() + mark(1, 2) + again.item("function_call", 0, arguments="")
    replay += again.on("response.function_call_arguments.delta", 0, delta='{"city')
    replay += again.on("response.function_call_arguments.delta", 0, delta='": "x"}')
    replay += again.on("response.function_call_arguments.done", 0, arguments='{"city": "x"}')
    replay += again.item("function_call", 0, done=True) + again.item("function_call", 1)
    out = events(door.feed(replay))
    assert [e.get("delta") for e in out[:2]] == ["ty", '": "x"}']
    assert [e["sequence_number"] for e in out] == list(range(4, 4 + len(out)))
    assert out[3]["item"]["id"] == "fun_a0" and out[4]["item"]["id"] == "fun_b1"  # new: its own
    assert door.can_resume()  # no end yet: a second crash resumes again


def test_a_long_stream_counts_its_events_one_at_a_time_and_still_resumes(monkeypatch):
    """Past FOLD_EVERY events waiting, each new event counts the oldest: a long reply never
    pauses to count thousands at once (about 100 ms at 4096 on a loaded machine), and a crash
    after that still forwards only what the client lacks."""
    from mlxctl.front_door import resume

    monkeypatch.setattr(resume, "FOLD_EVERY", 8)
    door = StreamResume("/v1/messages")
    counted = []
    count = door._event

    def counting(block):
        counted.append(block)
        return count(block)

    monkeypatch.setattr(door, "_event", counting)
    door.feed(START + BLOCK)
    for i in range(40):
        before = len(counted)
        door.feed(mark(i) + text_delta(0, f"w{i} "))
        assert len(counted) - before <= 1  # never a pause to count a backlog
    assert len(counted) == 42 - 8  # all but the last FOLD_EVERY counted as they came
    door.begin_attempt()  # the crash counts the rest
    text = "".join(f"w{i} " for i in range(40))
    replay = (
        anthropic("message_start", message={"id": "msg_second"})
        + mark(*range(41))
        + BLOCK
        + text_delta(0, text[:-3])
        + text_delta(0, text[-3:] + "end")  # straddles: the client has all but "end"
        + anthropic("content_block_stop", index=0)
        + anthropic("message_stop")
    )
    out = events(door.feed(replay))
    assert [e["type"] for e in out] == ["content_block_delta", "content_block_stop", "message_stop"]
    assert out[0]["delta"]["text"] == "end"
