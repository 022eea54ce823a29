"""The worker's settings, from the command line (see `python -m server --help`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass
class Settings:
    model: str
    model_path: str
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    max_queue: int = 16
    max_body_bytes: int = 32 * 1024 * 1024
    max_output_tokens: int | None = None
    prefill_step_size: int | None = None
    heartbeat_s: float = 5.0
    shutdown_grace_s: float = 10.0
    log_level: str = "info"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
