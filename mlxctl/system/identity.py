"""Who a process is: pid + create time (+ a nonce in its environment), never a bare pid."""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass

import psutil

NONCE_ENV = "MLXCTL_NONCE"


def new_nonce() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Identity:
    pid: int
    create_time: float
    nonce: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Identity | None:
        if not data:
            return None
        try:
            return cls(int(data["pid"]), float(data["create_time"]), str(data.get("nonce", "")))
        except (KeyError, TypeError, ValueError):
            return None

    @classmethod
    def of(cls, pid: int, nonce: str = "") -> Identity | None:
        try:
            return cls(pid, psutil.Process(pid).create_time(), nonce)
        except psutil.Error:
            return None


def current(nonce: str = "") -> Identity:
    return Identity(os.getpid(), psutil.Process().create_time(), nonce)


def process_of(ident: Identity | None) -> psutil.Process | None:
    """The live process `ident` names, or None when it is gone or the pid was reused."""
    if ident is None or ident.pid <= 0:
        return None
    try:
        proc = psutil.Process(ident.pid)
        if abs(proc.create_time() - ident.create_time) > 0.05:
            return None  # same pid, another process: never signal it
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if ident.nonce:
            try:
                if proc.environ().get(NONCE_ENV) != ident.nonce:
                    return None  # a readable environment without our nonce: not ours
            except psutil.AccessDenied:
                pass  # environ unreadable (e.g. macOS): the create time must do
        return proc
    except psutil.Error:
        return None


def is_alive(ident: Identity | None) -> bool:
    return process_of(ident) is not None
