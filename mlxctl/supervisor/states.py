"""Worker process states and the one function every state change goes through."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STOPPED = "STOPPED"  # no worker and none wanted
    STARTING = "STARTING"  # spawned, /health not yet 200 (loading the model is not a hang)
    RUNNING = "RUNNING"  # /health answered 200
    BACKOFF = "BACKOFF"  # exited unexpectedly; waiting before the next spawn
    STOPPING = "STOPPING"  # SIGTERM sent to the group, waiting out the grace period
    EXITED = "EXITED"  # gone (crash, liveness kill); the policy decides what comes next
    FATAL = "FATAL"  # too many fast failures: no more spawns until `mlxctl start`


class InvalidTransition(RuntimeError):
    """A state change the supervisor must never make (a bug, not an operational failure)."""


ALLOWED: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.RUNNING, State.EXITED, State.STOPPING}),
    State.RUNNING: frozenset({State.EXITED, State.STOPPING}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED}),
    State.STOPPING: frozenset({State.STOPPED, State.EXITED}),  # EXITED: a restart we asked for
    State.EXITED: frozenset({State.BACKOFF, State.FATAL, State.STOPPED}),
    State.FATAL: frozenset({State.STARTING, State.STOPPED}),
}


def transition(current: State, new: State) -> State:
    """Return `new` when `current -> new` is allowed, else raise InvalidTransition."""
    if new not in ALLOWED[current]:
        raise InvalidTransition(f"impossible worker transition {current.value} -> {new.value}")
    return new
