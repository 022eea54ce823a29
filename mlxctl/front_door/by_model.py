"""Several models by name at the door: which route a request's `model` means, and `/v1/models`.

Only with `[models.NAME]` entries configured; without them every request goes to the one worker
untouched, as before. The worker of an entry accepts its own name and any `claude-*` name, so a
request that named it by another alias reaches it with the entry's name instead.
"""

from __future__ import annotations

import json
import time

from mlxctl.front_door.routes import Route, RouteTable
from mlxctl.models.served import DEFAULT, Catalog
from server.edge.model_listing import model_entry

LISTING = "/v1/models"


def requested_model(method: str, body: bytes) -> tuple[str | None, dict | None]:
    """The `model` a POST's JSON body names, and the parsed body; (None, None) when none."""
    if method != "POST" or not body.lstrip().startswith(b"{"):
        return None, None
    try:
        said = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(said, dict) or not isinstance(said.get("model"), str):
        return None, None
    return said["model"], said


def route_request(catalog: Catalog, method: str, body: bytes) -> tuple[str | None, bytes, str]:
    """(route key or None for an unknown model, the body to send, the name asked for)."""
    requested, said = requested_model(method, body)
    if requested is None or said is None:
        return DEFAULT, body, ""
    target = catalog.route_of(requested)
    if target and requested != target and not requested.startswith("claude-"):
        body = json.dumps({**said, "model": target}).encode()  # an alias the worker does not know
    return target, body, requested


def _entry(name: str, aliases: list[str], route: Route, created: int) -> dict:
    return model_entry(name, created, aliases=aliases, state=route.state or "stopped")


def listing(catalog: Catalog, routes: RouteTable, started: float) -> dict:
    """Every configured model (the default first) with its aliases and state."""
    created = int(started or time.time())
    table = routes.routes()
    default_name = catalog.default_names[0] if catalog.default_names else "default"
    data = [_entry(default_name, ["claude-*"], table.get(DEFAULT, Route()), created)]
    for name, entry in catalog.models.items():
        data.append(_entry(name, list(entry.aliases), table.get(name, Route()), created))
    ids = [d["id"] for d in data]
    return {"object": "list", "data": data, "has_more": False, "first_id": ids[0],
            "last_id": ids[-1]}  # fmt: skip


def one_model(catalog: Catalog, routes: RouteTable, started: float, path: str) -> dict | None:
    """`/v1/models/{id}`: the entry the id names (by name or alias), None when unknown."""
    wanted = path[len(LISTING) + 1 :]
    target = catalog.route_of(wanted)
    if target is None:
        return None
    for item in listing(catalog, routes, started)["data"]:
        if item["id"] == (target or item["id"]):
            return {**item, "id": wanted} if target == DEFAULT else item
    return None
