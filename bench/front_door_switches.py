"""The front door bench, part 2: switches under load (migrate, rollback, kill -9)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import httpx

from bench.front_door_service import Service, stream_once


class Clients:
    """N clients streaming through the door back to back, every request recorded."""

    def __init__(self, url: str, model: str, count: int, max_tokens: int):
        self.runs: list[dict] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(url, model, max_tokens), daemon=True)
            for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _loop(self, url: str, model: str, max_tokens: int) -> None:
        client = httpx.Client(timeout=600)
        while not self.stop.is_set():
            self.runs.append(stream_once(client, url, model, max_tokens))

    def end(self) -> list[dict]:
        self.stop.set()
        for thread in self.threads:
            thread.join(600)
        return self.runs


def longest_wait(runs: list[dict]) -> float:
    return max((max([r["ttft"], *r["gaps"]]) for r in runs if "ttft" in r), default=0.0)


def switches(service: Service, clients: int, max_tokens: int) -> None:
    releases = json.loads(service.ctl("release", "ls", "--json").stdout)
    second = next(r["id"] for r in releases if r["note"] == "bench second")
    events = {
        "mlxctl migrate": lambda: service.ctl("migrate", "--to", second),
        "mlxctl rollback": lambda: service.ctl("rollback"),
        "kill -9 of the worker": lambda: crash(service),
    }
    print(f"\n## Switches under load ({clients} clients streaming {max_tokens} tokens back to "
          "back through the front door)\n")  # fmt: skip
    print("| event | event s | requests | failed | longest wait s | steady longest wait s | "
          "address before | address after |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name, act in events.items():
        before = service.status()
        load = Clients(before["url"], service.model, clients, max_tokens)
        time.sleep(3.0)
        began = time.perf_counter()
        act()
        took = time.perf_counter() - began
        time.sleep(3.0)
        runs = load.end()
        after = service.status()
        steady = [r for r in runs if r.get("end", began) < began]
        during = [r for r in runs if r["began"] >= began or r.get("end", began) >= began]
        failed = [r for r in runs if "error" in r]
        print(f"| {name} | {took:.1f} | {len(runs)} | {len(failed)} | "
              f"{longest_wait(during):.2f} | {longest_wait(steady):.2f} | "
              f"{before['url']} | {after['url']} |")  # fmt: skip
        for run in failed[:3]:
            print(f"  failed: {run['error']}", file=sys.stderr)


def crash(service: Service) -> None:
    """SIGKILL the worker; back once the supervisor's restart serves again."""
    before = service.status()
    os.kill(before["worker_pid"], signal.SIGKILL)
    while True:
        now = service.status()
        if now["state"] == "RUNNING" and now["restarts"] > before["restarts"]:
            return
        time.sleep(0.1)
