"""The `mlxctl status` view against a fake worker and a real one; the `--json` schema."""

from __future__ import annotations

import json
import time

import httpx
import pexpect

from mlxctl import exit_codes
from server.api.request_ring import Recorded, RequestRing
from tests.fixtures_supervisor import MLXCTL

GIB = 1024**3

# The documented `mlxctl status --json` schema (README, "Status"): scripts rely on these keys.
STATUS_KEYS = {
    "state", "detail", "worker_pid", "supervisor_pid", "restarts", "uptime_seconds", "url",
    "port", "worker_url", "worker_port", "model", "model_path", "release", "health", "last_exit",
    "fatal_reason",
    "worker_rss_bytes", "memory", "system_memory", "cache", "queue_depth", "requests",
    "tokens_reused", "cache_hit_rate", "backend", "context_length", "images", "recent",
    "memory_limits",
    "scheduler", "ranks", "log_tail", "models",
}  # fmt: skip
RECENT_KEYS = {
    "id", "time", "protocol", "prompt_tokens", "cached_tokens", "completion_tokens", "ttft_ms",
    "tokens_per_second", "finish",
}  # fmt: skip

CACHE = {
    "ram": {"entries": 4, "bytes": 5 * GIB, "budget_bytes": 8 * GIB},
    "disk": {"entries": 7, "bytes": 14 * GIB, "budget_bytes": 20 * GIB, "bytes_written": 3096023},
    "hits": 9, "ram_hits": 8, "disk_hits": 1, "misses": 3, "lookup_tokens": 100000,
    "tokens_reused": 86486, "hit_rate": 0.75, "token_reuse_rate": 0.8648648648648649,
    "prefill_tokens_per_second": 812.3, "prefill_seconds_saved": 106.5,
}  # fmt: skip
RECENT = [
    {"id": "a1b2c3d4e5f6", "time": time.time(), "protocol": "anthropic", "prompt_tokens": 27342,
     "cached_tokens": 27000, "completion_tokens": 40, "ttft_ms": 740, "tokens_per_second": 11.2,
     "finish": "tool_calls"},
    {"id": "0a1b2c3d4e5f", "time": time.time(), "protocol": "openai", "prompt_tokens": 27342,
     "cached_tokens": 0, "completion_tokens": 40, "ttft_ms": 36550, "tokens_per_second": None,
     "finish": "stop"},
]  # fmt: skip


SPECULATIVE = {
    "mode": "auto",
    "draft_model": "/models/tiny",
    "draft_caches": {"entries": 3, "hits": 12},
    "mtp": True,
    "drafted": 1200,
    "accepted": 900,
    "verify_steps": 300,
    "tokens_per_step": 4.0,
    "recent": [{"source": "copy", "tokens_per_step": 3.52}],
}
SCHEDULER = {"mode": "batched", "running": 3, "waiting": 1, "batch_size": 2, "prefilling": 1,
             "tokens_per_second": 41.25, "speculative": SPECULATIVE}  # fmt: skip


def fake_status(make_ctl):
    status = {"cache": CACHE, "recent": RECENT, "context_length": 32768, "scheduler": SCHEDULER,
              "images": True}  # fmt: skip
    ctl = make_ctl(env={"FAKE_WORKER_STATUS": json.dumps(status), "COLUMNS": "100"})
    ctl.run("start", check=True)
    return ctl


def test_status_panels_against_a_fake_worker(make_ctl):
    ctl = fake_status(make_ctl)
    result = ctl.run("status")
    assert result.returncode == exit_codes.OK, result.stderr
    text = result.stdout
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "None" not in text and "0.86" not in text
    for panel in ("service", "memory", "prefix cache", "last requests"):
        assert f"╭─ {panel} " in text, panel
    row = {line.split()[1]: line for line in lines if line.startswith("│ ") and "iB /" in line}
    assert "4" in row["ram"] and "5.0 GiB / 8.0 GiB" in row["ram"] and "67%" in row["ram"]
    assert "3.0 MiB" in row["disk"] and "8%" in row["disk"]
    total = next(line for line in lines if line.startswith("│ all"))
    assert total.split()[2:5] == ["75%", "86%", "106.5"]
    first = next(line for line in lines if "a1b2c3d4e5f6" in line)
    assert first.split()[3:9] == ["anthropic", "27,342", "99%", "740", "ms", "11.2"]
    second = next(line for line in lines if "0a1b2c3d4e5f" in line)
    assert second.split()[5:9] == ["0%", "36.5", "s", "-"]
    assert "32,768 tokens" in text
    assert "input" in text and "text and images" in text
    assert "3 running, 2 decoding" in text and "1 waiting, 41.2 tok/s" in text
    words = " ".join(text.split())  # the label column is as wide as its longest label
    assert "│ drafting auto, 75% of 1,200 accepted │" in words
    assert "│ draft model tiny (caches 3 kept, 12 hits)" in words and "│ MTP head loaded" in words
    assert "│ verify 4.0 tokens/step; last copy 3.5 │" in words
    assert "██████░░░░ 5.0 GiB / 8.0 GiB" in text


def test_status_shows_a_failing_cache_disk(make_ctl):
    error = {"reason": "write: OSError: disk full", "since": time.time(),
             "retry_in_s": 42.0}  # fmt: skip
    cache = {**CACHE, "disk": {**CACHE["disk"], "error": error}}
    ctl = make_ctl(env={"FAKE_WORKER_STATUS": json.dumps({"cache": cache}), "COLUMNS": "100"})
    ctl.run("start", check=True)
    text = ctl.run("status").stdout
    assert "disk failing since" in text and "RAM only; next try in 42s" in text
    assert "RAM only; next try in 42s: write: OSError: disk full" in text
    as_json = json.loads(ctl.run("status", "--json").stdout)
    assert as_json["cache"]["disk"]["error"]["reason"] == error["reason"]
    assert "disk failing" not in fake_status(make_ctl).run("status").stdout  # only when it fails


def test_status_json_keys_are_the_documented_schema(make_ctl):
    ctl = fake_status(make_ctl)
    st, code = ctl.status()
    assert code == exit_codes.OK
    assert set(st) == STATUS_KEYS
    assert set(st["system_memory"]) == {"total_bytes", "used_bytes", "available_bytes"}
    assert [set(r) for r in st["recent"]] == [RECENT_KEYS, RECENT_KEYS]
    assert st["recent"][0]["id"] == "a1b2c3d4e5f6"


def test_watch_ends_on_q(make_ctl):
    ctl = fake_status(make_ctl)
    child = pexpect.spawn(
        MLXCTL, ["status", "--watch", "--interval", "0.2"], env=ctl.env, timeout=20,
        encoding="utf-8", dimensions=(60, 100),
    )  # fmt: skip
    try:
        child.expect("last requests")
        child.expect("last requests")  # redrawn at least once
        child.send("q")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == exit_codes.OK
    finally:
        child.close(force=True)


def test_ring_keeps_the_newest_and_finds_by_prefix():
    ring = RequestRing(size=3)
    for i in range(5):
        ring.record(Recorded(f"req{i}abc", "openai", {"prompt": i, "finish": "stop"}))
    assert [r["id"] for r in ring.recent()] == ["req4abc", "req3abc", "req2abc"]
    assert ring.find("req3").id == "req3abc"
    assert ring.find().id == "req4abc"
    assert ring.find("req0") is None  # fell off the ring
    assert [e.id for e in ring.before(ring.find("req4"))] == ["req3abc", "req2abc"]


def test_status_against_the_real_worker(make_ctl):
    ctl = make_ctl(real=True, env={"COLUMNS": "100"})
    ctl.run("start", check=True, timeout=300)
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 4}  # fmt: skip
    reply = httpx.post(ctl.url + "/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    request_id = reply.headers["x-request-id"]
    prompt = reply.json()["usage"]["prompt_tokens"]
    result = ctl.run("status")
    assert result.returncode == exit_codes.OK, result.stderr
    row = next(line for line in result.stdout.splitlines() if request_id in line)
    assert row.split()[3:6] == ["openai", f"{prompt:,}", "0%"]
    assert "╭─ prefix cache " in result.stdout and "None" not in result.stdout
    st, _ = ctl.status()
    assert st["recent"][0]["id"] == request_id and st["context_length"] == 32768
    # Polls are DEBUG: the worker log names the chat request, not the status polls.
    log = ctl.worker_log()
    assert "/v1/chat/completions 200" in log
    assert "GET /v1/status" not in log
