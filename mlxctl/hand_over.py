"""Ask the running supervisor to switch workers (restart, migrate, rollback) behind the front
door, and wait for its verdict: the address stays open and no request fails. No Typer, no Rich."""

from __future__ import annotations

import time
import uuid

from mlxctl.errors import SwitchFailedError
from mlxctl.status import status
from mlxctl.supervisor import state as state_file

POLL_SECONDS = 0.1
WAIT_SECONDS = 900.0  # a model load at 30B scale, its smoke tests, and room to spare


def can_hand_over() -> bool:
    """A supervisor runs and its worker serves: a switch can start the next one beside it."""
    return status(probe=False).running


def hand_over(
    reason: str,
    model: str | None = None,
    model_name: str | None = None,
    release: str | None = None,
    timeout: float = WAIT_SECONDS,
) -> str:
    """The supervisor's verdict: what serves now; SwitchFailedError with why when it failed."""
    request_id = uuid.uuid4().hex
    request = {"id": request_id, "reason": reason, "model": model, "model_name": model_name}
    state_file.request_switch({**request, "release": release})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = state_file.read_or_none()
        verdict = (saved.switch if saved else None) or {}
        if verdict.get("id") == request_id and verdict.get("ok") is not None:
            if verdict["ok"]:
                return str(verdict.get("detail") or "switched")
            raise SwitchFailedError(
                f"the switch failed: {verdict.get('detail')}",
                hint="the log says more: `mlxctl logs --supervisor`",
            )
        if status(probe=False).supervisor_pid is None:
            raise SwitchFailedError("the supervisor exited during the switch")
        time.sleep(POLL_SECONDS)
    raise SwitchFailedError(f"no verdict on the switch within {timeout:g}s")
