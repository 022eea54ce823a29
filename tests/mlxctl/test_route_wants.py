"""The route table's wants: a request for a model that is not running asks for it by ticket, and
a refusal reaches exactly the requests that waited for it."""

from __future__ import annotations

from mlxctl.front_door.by_model import route_request
from mlxctl.front_door.routes import Route, RouteTable
from mlxctl.models.served import DEFAULT, Catalog, ServedModel


def test_a_refusal_reaches_the_wants_it_answers_not_later_ones():
    routes = RouteTable()
    routes.set(Route(asleep=True), "fast")
    first, second = routes.want("fast"), routes.want("fast")
    assert routes.take_wants() == {"fast": second} and routes.take_wants() == {}
    routes.refuse("fast", "no room", second)
    later = routes.want("fast")
    assert routes.refusal("fast", first) == routes.refusal("fast", second) == "no room"
    assert routes.refusal("fast", later) is None  # memory may have freed since: tried again


def test_usage_counts_requests_per_model():
    routes = RouteTable()
    with routes.serving("http://w:1", "fast"):
        busy, last, served = routes.usage("fast")
        assert (busy, served) == (1, 1) and last is not None
    assert routes.usage("fast")[0] == 0 and routes.usage(DEFAULT) == (0, None, 0)


def test_an_alias_the_worker_does_not_know_reaches_it_renamed():
    catalog = Catalog(("big",), {"fast": ServedModel("fast", "p", ("gpt-4o-mini", "claude-h*"))})
    target, body, asked = route_request(catalog, "POST", b'{"model": "gpt-4o-mini", "x": 1}')
    assert (target, asked) == ("fast", "gpt-4o-mini") and b'"model": "fast"' in body
    target, body, _ = route_request(catalog, "POST", b'{"model": "claude-haiku-4-5"}')
    assert target == "fast" and body == b'{"model": "claude-haiku-4-5"}'  # workers take claude-*
    assert route_request(catalog, "POST", b'{"model": "gpt-5"}')[0] is None
    assert route_request(catalog, "GET", b"")[0] == DEFAULT
