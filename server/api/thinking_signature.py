"""Signatures for thinking blocks, stdlib only: the reasoning travels inside its signature.

Claude Code drops a thinking block without a signature; with `display: omitted` the block's
text is empty and only the signature comes back in history. So the signature carries the
reasoning itself (compressed) with an HMAC under a key kept in the mlxctl home: a block this
worker signed gives its exact reasoning back, so the prompt renders as the model wrote it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import zlib
from functools import cache

from server.edge.contract import home

log = logging.getLogger(__name__)

PREFIX = "mlxctl1."
KEY_FILE = "thinking.key"
TAG_BYTES = 16


@cache
def _key() -> bytes:
    """The home's signing key, made on first use (0600); a process key if home is read-only."""
    path = home() / KEY_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{KEY_FILE}.")
            try:
                os.write(fd, secrets.token_hex(32).encode())
                os.close(fd)
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)  # create-if-absent, whole: a racing worker keeps its key
            finally:
                os.unlink(tmp)
        return path.read_bytes().strip()
    except OSError as exc:
        log.warning("no thinking key in %s (%s): signatures last until the worker stops", path, exc)
        return secrets.token_bytes(32)


def _tag(payload: str) -> str:
    digest = hmac.new(_key(), payload.encode(), hashlib.sha256).digest()[:TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(reasoning: str) -> str:
    """A non-empty signature that carries `reasoning`."""
    packed = zlib.compress(reasoning.encode(), 6)
    payload = base64.urlsafe_b64encode(packed).decode().rstrip("=")
    return f"{PREFIX}{payload}.{_tag(payload)}"


def reasoning_of(signature: object) -> str | None:
    """The reasoning a signature of ours carries; None for any other (another server's, forged)."""
    if not isinstance(signature, str) or not signature.startswith(PREFIX):
        return None
    payload, _, tag = signature[len(PREFIX) :].rpartition(".")
    if not payload or not hmac.compare_digest(tag, _tag(payload)):
        return None
    try:
        packed = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        return zlib.decompress(packed).decode()
    except (ValueError, zlib.error, UnicodeDecodeError):
        return None
