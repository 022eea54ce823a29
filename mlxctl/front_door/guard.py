"""The key and the Host/Origin guard, checked once at the door before a request waits."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from server.edge.hosts import host_of, name_allowed

OPEN_PATHS = {"/health"}  # as the worker: probes need no key


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


@dataclass(frozen=True)
class Guard:
    api_key: str  # "" = none
    bind_host: str
    allowed_hosts: tuple[str, ...] = ()

    def check(self, path: str, headers: dict[str, str]) -> Refusal | None:
        host = headers.get("host")
        if host is not None and not self._allowed(host):
            return Refusal(403, f"host {host!r} is not served here (see allowed_hosts)")
        origin = headers.get("origin")
        if origin is not None:
            authority = origin.split("://", 1)[1] if "://" in origin else ""
            if not authority or not self._allowed(authority):
                return Refusal(403, f"origin {origin!r} is not allowed (see allowed_hosts)")
        if self.api_key and path not in OPEN_PATHS and not self._key_matches(headers):
            return Refusal(401, "invalid or missing API key (x-api-key or Authorization: Bearer)")
        return None

    def _allowed(self, authority: str) -> bool:
        return name_allowed(host_of(authority), self.bind_host, self.allowed_hosts)

    def _key_matches(self, headers: dict[str, str]) -> bool:
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.api_key.encode())
