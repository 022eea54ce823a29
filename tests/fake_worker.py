"""The one fake worker: a stdlib HTTP server speaking just enough of the worker's protocol.

Run as a script (`python tests/fake_worker.py --model M --port N`) it stands in for the worker
under a real supervisor, starting in tens of milliseconds; imported, `FakeWorker` serves the
cache endpoints to in-process tests. Stdlib only, and no pytest import, so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeWorker(BaseHTTPRequestHandler):
    """/health, /v1/status, /v1/cache and /v1/chat/completions; class attributes steer it."""

    protocol_version = "HTTP/1.1"
    model = "fake"
    began = time.monotonic()
    load_seconds = 0.0  # /health answers 503 until then
    entries: list[dict] = []  # noqa: RUF012  the cache entries /v1/cache lists
    has_cache_endpoint = True
    broken_tools = False  # fail every chat request that offers tools
    cache_stats: dict | None = None  # what /v1/status reports under "cache"
    status_extra: dict = {}  # noqa: RUF012  more /v1/status keys (FAKE_WORKER_STATUS, JSON)
    quiet = True
    seen: list[tuple[str, str, str | None]] = []  # noqa: RUF012  (method, path, authorization)

    def log_message(self, fmt, *args):
        if not self.quiet:
            print(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}", flush=True)

    def send_json(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_sse(self, events: list[str]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in events:
            chunk = f"{event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        self.seen.append(("GET", self.path, self.headers.get("authorization")))
        loading = time.monotonic() - self.began < self.load_seconds
        if self.path == "/health":
            self.send_json(503 if loading else 200, {"status": "loading" if loading else "ok"})
        elif self.path.startswith("/spam"):
            # Prints N lines of output: a worker whose log nobody reads must still answer.
            lines = int(parse_qs(urlparse(self.path).query).get("lines", ["100"])[0])
            for i in range(lines):
                print(f"fake worker spam line {i:06d} " + "x" * 80, flush=True)
            self.send_json(200, {"printed": lines})
        elif self.path == "/v1/status":
            self.send_json(200, self.status_body())
        elif self.path == "/v1/cache" and self.has_cache_endpoint:
            self.send_json(200, {"entries": self.entries})
        else:
            self.send_json(404, {"error": "not found"})

    def status_body(self) -> dict:
        return {
            "model": self.model,
            "pid": os.getpid(),
            "backend": "fake",
            "uptime_seconds": time.monotonic() - self.began,
            "memory": {"active_bytes": 1, "peak_bytes": 2, "rss_bytes": 3},
            "queue_depth": 0,
            "requests": {},
            "cache": self.cache_stats,
            **self.status_extra,
        }

    def do_DELETE(self):
        url = urlparse(self.path)
        self.seen.append(("DELETE", self.path, self.headers.get("authorization")))
        if url.path != "/v1/cache" or not self.has_cache_endpoint:
            return self.send_json(404, {"error": "not found"})
        tier = parse_qs(url.query)["tier"][0]
        freed = sum(e["bytes"] for e in self.entries if tier in ("both", e["tier"]))
        self.send_json(200, {"freed_bytes": freed})

    def do_POST(self):
        self.seen.append(("POST", self.path, self.headers.get("authorization")))
        if urlparse(self.path).path == "/v1/cache/shed" and self.has_cache_endpoint:
            freed = sum(e["bytes"] for e in self.entries if e["tier"] == "ram")
            return self.send_json(200, {"written": 0, "freed_bytes": freed})
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.broken_tools and body.get("tools"):
            return self.send_json(500, {"error": {"message": "tool calling is broken"}})
        message = {"role": "assistant", "content": "hi"}
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return self.send_json(200, {"choices": [choice]})
        chunks = [{"choices": [{"index": 0, "delta": {"content": f"{i}"}}]} for i in range(3)]
        self.send_sse([f"data: {json.dumps(c)}" for c in chunks] + ["data: [DONE]"])


def main() -> None:
    """The supervised worker's stand-in; FAKE_WORKER_* variables script its misbehaviour."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="fake")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broken-tools", action="store_true")
    args = parser.parse_args()
    FakeWorker.model, FakeWorker.broken_tools = args.model, args.broken_tools
    FakeWorker.status_extra = json.loads(os.environ.get("FAKE_WORKER_STATUS", "{}"))
    FakeWorker.load_seconds = float(os.environ.get("FAKE_WORKER_LOAD_SECONDS", "0.3"))
    FakeWorker.quiet = False
    FakeWorker.began = time.monotonic()
    exit_while_loading = os.environ.get("FAKE_WORKER_EXIT_CODE")
    print(f"fake worker loading {args.model} (pid {os.getpid()})", flush=True)
    if os.environ.get("FAKE_WORKER_CHILD"):
        # A grandchild that would outlive a careless stop.
        sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
        subprocess.Popen(sleeper)
        # Escapes the group: only reaping finds it.
        subprocess.Popen(sleeper, start_new_session=True)
    once = os.environ.get("FAKE_WORKER_EXIT_ONCE")  # a marker file: the first run dies
    if once and not os.path.exists(once):
        open(once, "w").close()
        exit_while_loading = "9"
    if exit_while_loading:
        time.sleep(FakeWorker.load_seconds / 2)
        print("fake worker: fatal error while loading", flush=True)
        sys.exit(int(exit_while_loading))
    server = ThreadingHTTPServer((args.host, args.port), FakeWorker)
    server.daemon_threads = True

    def on_term(signum, frame):
        print("fake worker: SIGTERM, shutting down", flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    if os.environ.get("FAKE_WORKER_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    print(f"fake worker listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    print("fake worker: bye", flush=True)


if __name__ == "__main__":
    main()
