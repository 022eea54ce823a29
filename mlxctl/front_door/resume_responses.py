"""The ledger of a resumed Responses stream (resume.py): what the client has of the reply, and
a replayed event cut to what it lacks, under the ids it has and the next sequence number.

A replay starts with `response.created` and `response.in_progress` (dropped: the client has
them); each output item's `added`, part and `done` events go out once per (output index, part);
a delta is trimmed by the characters the client has of its field. The re-sent request carries
the client's ids, so the worker that finishes the reply stores it under them (a chain on
`previous_response_id` finds it); the door still rewrites any id of a replayed event that
differs, and renumbers `sequence_number` on from the last one sent.
"""

from __future__ import annotations

from mlxctl.front_door.resume_chat import Ledger, cut
from server.edge.resume_wire import RESUME_RESPONSE_KEY


def _part(data: dict) -> tuple[str, int, int]:
    """An item event's key: its type, output index and part (content or summary index)."""
    index = data.get("content_index", data.get("summary_index", 0))
    return data["type"], data["output_index"], index if isinstance(index, int) else 0


def _delta(data: dict) -> str | None:
    text = data.get("delta")
    return text if data["type"].endswith(".delta") and isinstance(text, str) else None


class ResponsesLedger(Ledger):
    def __init__(self) -> None:
        self.response: tuple[str, int] | None = None  # the client's response id, created_at
        self.items: dict[int, str] = {}  # output index -> the item id the client has
        self.said: set[tuple[str, int, int]] = set()  # item events sent, all but deltas
        self.held: dict[tuple[str, int, int], int] = {}  # delta key -> chars the client has
        self.at: dict[tuple[str, int, int], int] = {}  # the same, in the replay so far
        self.seq = 0  # the sequence number the client expects next
        self._start = False  # the replay's response.created was dropped: in_progress follows

    def sent(self, data: dict) -> None:
        if isinstance(seq := data.get("sequence_number"), int):
            self.seq = seq + 1
        kind = data.get("type")
        if kind == "response.created" and isinstance(response := data.get("response"), dict):
            self.response = (response["id"], response["created_at"])
        if not isinstance(data.get("output_index"), int) or not isinstance(kind, str):
            return
        key = _part(data)
        if (text := _delta(data)) is not None:
            self.held[key] = self.held.get(key, 0) + len(text)
            return
        self.said.add(key)
        item_id = (data.get("item") or {}).get("id")
        if kind == "response.output_item.added" and isinstance(item_id, str):
            self.items[data["output_index"]] = item_id

    def new_attempt(self) -> None:
        self.at, self._start = {}, False

    def resume_fields(self) -> dict:
        if self.response is None:
            return {}
        items: list[str] = []  # by output index, from the first: as far as the client has them
        while len(items) in self.items:
            items.append(self.items[len(items)])
        said = {"id": self.response[0], "created_at": self.response[1], "items": items}
        return {RESUME_RESPONSE_KEY: said}

    def replayed(self, data: dict) -> dict | None:
        kind = data.get("type")
        start, self._start = self._start, False
        if kind == "response.created" and self.response is not None:
            self._start = True
            return None
        if kind == "response.in_progress" and start:
            return None  # a later one is the worker's keep-alive: it goes out
        if isinstance(data.get("output_index"), int) and isinstance(kind, str):
            key = _part(data)
            if (text := _delta(data)) is not None:
                at = self.at.get(key, 0)
                self.at[key] = at + len(text)
                kept = cut(self.held.get(key, 0), at, text)
                if not kept:
                    return None
                data = {**data, "delta": kept} if kept != text else data
            elif key in self.said:
                return None
        data = self._client_ids(data)
        if "sequence_number" in data:
            data = {**data, "sequence_number": self.seq}
        return data

    def _client_ids(self, data: dict) -> dict:
        """`data` with the ids the client has in place of those the next worker minted."""
        index = data.get("output_index")
        mine = self.items.get(index) if isinstance(index, int) else None
        if mine is not None and data.get("item_id", mine) != mine:
            data = {**data, "item_id": mine}
        item = data.get("item")
        if mine is not None and isinstance(item, dict) and item.get("id") != mine:
            data = {**data, "item": {**item, "id": mine}}
        response = data.get("response")
        if self.response is not None and isinstance(response, dict):
            response_id, created = self.response
            response = {**response, "id": response_id, "created_at": created}
            if isinstance(output := response.get("output"), list):
                response["output"] = [
                    {**o, "id": self.items.get(i, o.get("id"))} if isinstance(o, dict) else o
                    for i, o in enumerate(output)
                ]
            data = {**data, "response": response}
        return data
