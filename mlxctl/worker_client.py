"""The one HTTP client mlxctl uses to talk to a worker (health, status, cache, smoke requests).

http.client, not httpx: `mlxctl status` and `mlxctl cache ls` must answer fast, and httpx alone
costs ~0.1 s to import. It never reads proxy settings: the worker is on this host.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from mlxctl.errors import SupervisorError, WorkerRefused, WorkerUnavailable

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
CANARY_HEADER = "x-mlxctl-canary"
KEY_HINT = "set the worker's key with `mlxctl config set api_key KEY`"


def connect_host(host: str) -> str:
    """Where to reach a worker bound to `host` from this machine (a wildcard means loopback)."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


def base_url(host: str, port: int) -> str:
    host = connect_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def auth_headers(api_key: str | None) -> dict[str, str]:
    """Both spellings: the Anthropic SDK sends x-api-key, the OpenAI one a bearer token."""
    return {"authorization": f"Bearer {api_key}", "x-api-key": api_key} if api_key else {}


@dataclass
class Reply:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.body) if self.body else {}


class WorkerClient:
    """Requests to the worker at `url` (`http://host:port`), with the key when there is one."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 10.0):
        parts = urlsplit(url)
        self.url = url.rstrip("/")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = auth_headers(api_key)
        self.timeout = timeout

    @classmethod
    def configured(cls, url: str, timeout: float = 10.0) -> WorkerClient:
        """A client with the configured API key (loading the config costs tomlkit)."""
        from mlxctl import config

        return cls(url, config.load().get("api_key") or None, timeout)

    # -- raw requests ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _open(
        self, method: str, path: str, body: object = None, headers: dict | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        data = None if body is None else json.dumps(body).encode()
        sent = {**self.headers, **(headers or {})}
        if data is not None:
            sent["content-type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            try:
                conn.request(method, path, body=data, headers=sent)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise WorkerUnavailable(
                    f"the worker at {self.url} did not answer ({exc.__class__.__name__})"
                ) from exc
            yield response
        finally:
            conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        params: dict | None = None,
        headers: dict | None = None,
    ) -> Reply:
        """Any status comes back as a Reply; only a worker that does not answer raises."""
        if params:
            path = f"{path}?{urlencode(params)}"
        with self._open(method, path, body, headers) as response:
            try:
                return Reply(response.status, response.read())
            except (OSError, http.client.HTTPException) as exc:
                raise WorkerUnavailable(f"the worker at {self.url} broke off its reply") from exc

    @contextlib.contextmanager
    def stream(
        self, method: str, path: str, body: object = None, headers: dict | None = None
    ) -> Iterator[tuple[int, Iterator[str]]]:
        """(status, lines) of a streamed reply such as SSE, read as it arrives."""
        with self._open(method, path, body, headers) as response:

            def lines() -> Iterator[str]:
                for raw in response:
                    yield raw.decode("utf-8", "replace").rstrip("\r\n")

            yield response.status, lines()

    def json(
        self, method: str, path: str, body: object = None, params: dict | None = None
    ) -> object:
        """The JSON body of a 2xx reply; WorkerUnavailable for a missing endpoint (404/405),
        WorkerRefused for any other error status."""
        return self._body(self.request(method, path, body, params), method, path)

    @staticmethod
    def _body(reply: Reply, method: str, path: str) -> object:
        if reply.status in (404, 405):
            raise WorkerUnavailable(f"the worker has no {method} {path.lstrip('/')}")
        if reply.status in (401, 403):
            raise WorkerRefused(
                f"the worker refused {method} {path} (HTTP {reply.status})", reply.status, KEY_HINT
            )
        if reply.status >= 400:
            raise WorkerRefused(
                f"the worker answered HTTP {reply.status}: {reply.text}", reply.status
            )
        try:
            return reply.json()
        except ValueError:
            return {}

    # -- the admin endpoints -------------------------------------------------------------------

    def health(self, path: str = "/health") -> int:
        """The health endpoint's status code (200 ready, 503 loading)."""
        return self.request("GET", path).status

    def status(self) -> dict:
        body = self.json("GET", "/v1/status")
        return body if isinstance(body, dict) else {}

    def cache_list(self) -> list[dict]:
        body = self.json("GET", "/v1/cache")
        rows = body.get("entries") if isinstance(body, dict) else body
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def cache_why(self, request_id: str | None) -> dict:
        """Where a recent request left the cache; WorkerRefused(404) when the ring lacks it."""
        params = {"request_id": request_id} if request_id else None
        reply = self.request("GET", "/v1/cache/why", params=params)
        if reply.status == 404 and "not among" in reply.text:  # not a missing endpoint
            said = reply.json()
            error = said.get("error") if isinstance(said, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            hint = "`mlxctl status` lists the recent requests' ids"
            raise WorkerRefused(str(message or reply.text), 404, hint)
        body = self._body(reply, "GET", "/v1/cache/why")
        return body if isinstance(body, dict) else {}

    def cache_clear(self, tier: str) -> object:
        return self.json("DELETE", "/v1/cache", params={"tier": tier})

    def cache_shed(self, budget_s: float) -> object:
        """Write the dirty RAM entries to disk (within `budget_s`), then drop the RAM tier."""
        return self.json("POST", "/v1/cache/shed", params={"budget_s": f"{budget_s:g}"})


@dataclass(frozen=True)
class Health:
    status: int
    failed: str | None = None  # the worker's reason when it says it cannot start at all
    stuck: str | None = None  # its watchdog's reason when generation stopped making progress


def probe_health(url: str, timeout: float) -> Health | None:
    """GET the health URL: its status and, for `{"status": "error"}`, the reason; None: silent."""
    parts = urlsplit(url)
    client = WorkerClient(f"{parts.scheme}://{parts.netloc}", timeout=timeout)
    try:
        reply = client.request(
            "GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        )
    except WorkerUnavailable:
        return None
    body: object = {}
    if reply.status == 503:
        try:
            body = reply.json()
        except ValueError:
            body = {}
    fields = body if isinstance(body, dict) else {}
    said = fields.get("status")
    reason = str(fields.get("error") or said) if said in ("error", "stuck") else None
    return Health(
        reply.status, reason if said == "error" else None, reason if said == "stuck" else None
    )


def canary(url: str, model: str, timeout: float, api_key: str | None = None) -> str:
    """One greedy token through the real chat path when the worker is idle: "" when it came
    (or the worker was busy, or has no /v1/status to say so), else what went wrong."""
    client = WorkerClient(url, api_key, timeout)
    try:
        if client.status().get("queue_depth") != 0:
            return ""  # busy (or unknown): real requests are the test, not a canary
    except SupervisorError:
        return ""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "temperature": 0,
    }
    try:
        # Marked, so request logs and counters can tell the canary from real traffic.
        reply = client.request("POST", "/v1/chat/completions", body, headers={CANARY_HEADER: "1"})
    except WorkerUnavailable:
        return f"no reply within {timeout:g}s"
    if reply.status in (429, 503):
        return ""  # overloaded or shutting down: not a hang
    return "" if reply.status == 200 else f"HTTP {reply.status}"


def probe(url: str, timeout: float) -> int | None:
    """The status code of GET `url` (a full health URL), or None when nothing answers."""
    parts = urlsplit(url)
    path = parts.path or "/"
    client = WorkerClient(f"{parts.scheme}://{parts.netloc}", timeout=timeout)
    try:
        return client.health(path + (f"?{parts.query}" if parts.query else ""))
    except WorkerUnavailable:
        return None
