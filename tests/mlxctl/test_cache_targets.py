"""`mlxctl cache` over several served models: which target each name means, where each model's
cache lives, and how listings, stats and clears add up across models (workers faked)."""

from __future__ import annotations

import pytest

from mlxctl import cache_across, cache_targets, config, paths
from mlxctl.cache_admin import Listing, Plan, Target
from mlxctl.errors import CacheAdminError
from mlxctl.status import Status

MODELS = """
model = "big-coder"

[cache]
disk_bytes = 1000

[models.fast]
path = "tiny-fast"
aliases = ["claude-haiku-*", "gpt-4o-mini"]

[models.fast.cache]
disk_bytes = 300

[models.slow]
path = "tiny-slow"
"""


@pytest.fixture
def settings(mlxctl_home):
    (mlxctl_home / "config.toml").write_text(MODELS)
    return config.load()


def running(*rows: dict) -> Status:
    default = {"name": "big-coder", "default": True, "state": "running",
               "worker_url": "http://127.0.0.1:40001"}  # fmt: skip
    return Status(state="RUNNING", url="http://127.0.0.1:8080", model="big-coder",
                  release="r1", models=[default, *rows])  # fmt: skip


def test_one_model_keeps_the_old_single_target(mlxctl_home):
    served = cache_targets.served({"model": "qwen"}, Status())
    assert not served.several
    [default] = served.pick(None)
    assert default.url is None and default.name is None and default.disk == paths.kv_cache_dir()
    assert served.pick("qwen") == [default]
    with pytest.raises(CacheAdminError, match="no served model is named 'llama'") as caught:
        served.pick("llama")
    assert caught.value.hint == "the served models: qwen"


def test_every_model_while_the_service_runs(settings):
    fast_row = {"name": "fast", "state": "running", "worker_url": "http://127.0.0.1:40002"}
    slow_row = {"name": "slow", "state": "idle-unloaded", "worker_url": None}
    served = cache_targets.served(settings, running(fast_row, slow_row))
    default, fast, slow = served.pick(None)
    # The default through the front door (as before), the others at their private address.
    assert (default.name, default.url, default.release) == ("big-coder", "http://127.0.0.1:8080",
                                                            "r1")  # fmt: skip
    assert (fast.name, fast.url) == ("fast", "http://127.0.0.1:40002")
    assert (slow.name, slow.url) == ("slow", None)  # unloaded: its disk folder alone
    assert default.disk == paths.kv_cache_dir()
    assert fast.disk == paths.model_cache_dir("fast") != slow.disk
    assert fast.settings == {"cache.ram_bytes": settings["cache.ram_bytes"],
                             "cache.disk_bytes": 300}  # its own budget wins  # fmt: skip
    assert slow.settings["cache.disk_bytes"] == 1000


def test_a_name_an_alias_or_the_default_picks_one(settings):
    served = cache_targets.served(settings, Status())
    assert [t.name for t in served.pick("fast")] == ["fast"]
    assert [t.name for t in served.pick("claude-haiku-4-5")] == ["fast"]  # an alias
    assert [t.name for t in served.pick("gpt-4o-mini")] == ["fast"]
    assert [t.name for t in served.pick("big-coder")] == ["big-coder"]
    assert [t.name for t in served.pick("claude-sonnet-4-5")] == ["big-coder"]  # as the door
    with pytest.raises(CacheAdminError) as caught:
        served.pick("gpt-5")
    assert caught.value.hint == "the served models: big-coder, fast, slow"
    assert all(t.url is None for t in served.pick(None))  # nothing runs: the disk folders


def test_a_model_served_but_no_longer_configured_is_still_covered(settings):
    gone = {"name": "old", "state": "running", "worker_url": "http://127.0.0.1:40003",
            "cache_dir": "/somewhere/old"}  # fmt: skip
    served = cache_targets.served(settings, running(gone))
    [old] = served.pick("old")
    assert old.url == "http://127.0.0.1:40003" and str(old.disk) == "/somewhere/old"


def fake_listings(monkeypatch, by_name: dict[str, Listing]) -> list[Target]:
    monkeypatch.setattr(cache_across, "list_entries", lambda where: by_name[where.name])
    return [Target(None, name=name) for name in by_name]


def test_listing_across_models_is_by_last_use_with_each_models_totals(monkeypatch):
    a = [{"id": "a1", "bytes": 10, "last_used": 5.0, "served_model": "a"}]
    b = [{"id": "b1", "bytes": 7, "last_used": 9.0, "served_model": "b"},
         {"id": "b2", "bytes": 1, "last_used": 1.0, "served_model": "b"}]  # fmt: skip
    targets = fake_listings(
        monkeypatch, {"a": Listing("worker", a), "b": Listing("disk", b, ["b: no worker runs"])}
    )
    listing = cache_across.list_all(targets)
    assert [e["id"] for e in listing.entries] == ["b1", "a1", "b2"]
    assert listing.source == "mixed" and listing.notes == ["b: no worker runs"]
    assert listing.to_dict()["models"] == [
        {"name": "a", "source": "worker", "entries": 1, "bytes": 10},
        {"name": "b", "source": "disk", "entries": 2, "bytes": 8},
    ]
    one = cache_across.list_all(targets[:1])
    assert "models" not in one.to_dict()  # one model: today's shape


def test_stats_across_models_sum_the_tiers_and_the_budgets(monkeypatch):
    each = {
        "a": {"source": "worker", "hits": 3, "notes": [],
              "ram": {"entries": 2, "bytes": 20, "budget_bytes": 100},
              "disk": {"entries": 1, "bytes": 5, "budget_bytes": 1000,
                       "bytes_written_total": 50}},
        "b": {"source": "disk", "notes": ["b: fell back"], "ram": None,
              "disk": {"entries": 4, "bytes": 40, "budget_bytes": 300,
                       "bytes_written_total": 40}},
    }  # fmt: skip
    monkeypatch.setattr(cache_across, "stats", lambda where: dict(each[where.name]))
    stats = cache_across.stats_all([Target(None, name="a"), Target(None, name="b")])
    assert stats["disk"] == {"entries": 5, "bytes": 45, "budget_bytes": 1300,
                             "bytes_written_total": 90}  # fmt: skip
    assert stats["ram"] == {"entries": 2, "bytes": 20, "budget_bytes": 100, "unknown_models": 1}
    assert [m["name"] for m in stats["models"]] == ["a", "b"]
    automatic = cache_across.sum_tier([{"entries": 1, "bytes": 2, "budget_bytes": -1}] * 2)
    assert automatic["budget_bytes"] is None  # 10% of RAM each: the worker sizes it
    assert stats["models"][0]["hits"] == 3 and stats["notes"] == ["b: fell back"]


def test_a_clear_across_models_leaves_a_model_with_nothing_alone(monkeypatch):
    acted = []
    monkeypatch.setattr(cache_across, "act", lambda plan: acted.append(plan.name) or plan.bytes)
    full = Plan("clear", "both", "worker", [{"bytes": 30}, {"bytes": 2}], name="a")
    empty = Plan("clear", "both", "disk", [], ["b: no worker runs"], name="b")
    across = cache_across.Across([full, empty])
    whole = across.whole
    assert (whole.bytes, len(whole.entries), whole.source) == (32, 2, "mixed")
    assert "model" not in whole.to_dict() and whole.notes == ["b: no worker runs"]
    assert across.act() == [32, 0] and acted == ["a"]
    alone = cache_across.Across([full])
    assert alone.whole.to_dict()["model"] == "a"  # --model: the answer names it


def test_a_models_running_worker_counts_while_the_default_restarts(settings):
    fast_row = {"name": "fast", "state": "running", "worker_url": "http://127.0.0.1:40002"}
    now = running(fast_row)
    now.state = "BACKOFF"
    default, fast, _ = cache_targets.served(settings, now).pick(None)
    assert default.url is None and fast.url == "http://127.0.0.1:40002"


def test_the_lookup_counters_add_up_and_their_rates_are_worked_out_again():
    each = [
        {"source": "worker", "hits": 3, "misses": 1, "lookup_tokens": 100, "tokens_reused": 50},
        {"source": "worker", "hits": 1, "misses": 3, "lookup_tokens": 300, "tokens_reused": 50},
        {"source": "disk", "hits": 99},  # no worker answered: its counters are not known
    ]
    sums = cache_across.sum_counters(each)
    assert (sums["hits"], sums["misses"], sums["tokens_reused"]) == (4, 4, 100)
    assert sums["hit_rate"] == 0.5 and sums["token_reuse_rate"] == 0.25
    assert cache_across.sum_counters(each[2:]) == {}


def test_why_asks_every_running_worker_and_keeps_the_one_that_knows(monkeypatch):
    def why(request_id, where):
        if where.name == "b":
            return {"request_id": "r9", "time": 9.0}
        raise CacheAdminError("request 'r9' is not among the worker's recent requests")

    monkeypatch.setattr(cache_across, "why", why)
    targets = [Target("http://a", name="a"), Target("http://b", name="b"), Target(None, name="c")]
    assert cache_across.why_any("r9", targets) == {"request_id": "r9", "time": 9.0,
                                                   "served_model": "b"}  # fmt: skip
    with pytest.raises(CacheAdminError, match="not among"):
        cache_across.why_any("r9", targets[:1] + targets[2:])
