"""The memory budget of several models: the least recently used idle one stops first."""

from __future__ import annotations

from mlxctl.supervisor.budget import Loaded, default_budget, make_room, planned_need

GIB = 1024**3


def test_it_fits_without_stopping_anything():
    assert make_room(2 * GIB, 8 * GIB, [Loaded("a", 4 * GIB, 1.0, True)]) == []


def test_the_least_recently_used_idle_model_stops_first():
    loaded = [
        Loaded("default", 3 * GIB, 0.0, False),  # never evicted, however old
        Loaded("recent", 2 * GIB, 50.0, True),
        Loaded("old", 2 * GIB, 10.0, True),
        Loaded("busy", 1 * GIB, 5.0, False),  # a request in flight
    ]
    assert make_room(2 * GIB, 8 * GIB, loaded) == ["old"]
    assert make_room(4 * GIB, 8 * GIB, loaded) == ["old", "recent"]


def test_none_when_even_stopping_every_idle_one_is_not_enough():
    loaded = [Loaded("default", 6 * GIB, 0.0, False), Loaded("idle", 1 * GIB, 1.0, True)]
    assert make_room(3 * GIB, 8 * GIB, loaded) is None


def test_a_users_budget_wins_and_the_need_counts_the_cache(tmp_path):
    assert default_budget(123, total=1000) == 123
    assert default_budget(0, total=1000) == 850
    (tmp_path / "weights.safetensors").write_bytes(b"x" * 1000)
    assert planned_need(str(tmp_path), 24) == 1024
    assert planned_need("org/not-here", -1, total=1000) == 100
