"""Which Host and Origin names an address serves: stdlib only, shared by the worker's guard and
mlxctl's front door so both refuse a DNS-rebinding page the same way."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

LOOPBACK_NAMES = ("localhost", "localhost.")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def host_of(value: str) -> str:
    """The host part of a Host header or an Origin's authority: no port, no brackets, lower."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def name_allowed(name: str, bind_host: str, allowed: Iterable[str]) -> bool:
    """Loopback names, the bind address and `allowed_hosts`: what a rebinding page cannot be."""
    allowed = [h.lower() for h in allowed]
    if "*" in allowed or bind_host in WILDCARD_BINDS:
        return True  # a wildcard bind serves every name (and needs an API key)
    if name in (bind_host.lower(), *allowed):
        return True
    return name in LOOPBACK_NAMES or name.endswith(".localhost") or is_loopback(name)
