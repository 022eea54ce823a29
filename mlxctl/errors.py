"""The errors mlxctl reports to people: one line of what went wrong plus a hint.

    MlxctlError                 one line + hint; exit code FAILURE unless a subclass says
    ├── ModelError              a model cannot be found, imported or removed
    │   └── UnsupportedModelError
    ├── ConfigError             the config file or a value for one of its keys is invalid
    ├── StateError              a state file exists but cannot be read (was CorruptState)
    ├── SupervisorError         the supervisor or its worker cannot be started, stopped, reached
    │   ├── PortInUseError
    │   ├── StartFailedError    the worker died or went FATAL before /health answered
    │   ├── StartLimitError     too many starts in a row ended FATAL (`mlxctl reset-failed`)
    │   ├── WorkerUnavailable   no worker answers (not running, or not reachable)
    │   └── WorkerRefused       it answered with an error status (`status` says which)
    ├── CacheAdminError         a cache listing or clean-up cannot be done
    └── ReleaseError            a release cannot be found, created, or switched to

Anything else reaching the CLI's boundary is a bug: it prints one line and the hint that
`MLXCTL_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

from mlxctl import exit_codes


class MlxctlError(Exception):
    """A failure the CLI prints as one line (plus `hint`) and turns into `exit_code`."""

    exit_code = exit_codes.FAILURE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ModelError(MlxctlError):
    """A model cannot be found, imported or removed."""


class UnsupportedModelError(ModelError):
    """The model file uses an architecture or tensor type mlxctl cannot convert."""


class ConfigError(MlxctlError):
    """The config file or a value given for one of its keys is invalid."""


class StateError(MlxctlError):
    """A state file exists but is not a readable JSON object."""


class SupervisorError(MlxctlError):
    """The supervisor or its worker could not be started, stopped or reached."""


class PortInUseError(SupervisorError):
    """Another program already listens on the configured port."""


class StartFailedError(SupervisorError):
    """The worker died or became FATAL before it answered /health."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        worker_exit_code: int | None = None,
        log_tail: list[str] | None = None,
    ):
        super().__init__(message, hint)
        self.worker_exit_code = worker_exit_code
        self.log_tail = list(log_tail or [])


class StartLimitError(SupervisorError):
    """Starts keep ending FATAL: refuse more until `mlxctl reset-failed` (like systemd)."""


class SwitchFailedError(SupervisorError):
    """A switch's next worker did not take over; the serving one (if any) carries on."""


class WorkerUnavailable(SupervisorError):
    """No worker answers at the address the state file names."""


class WorkerRefused(SupervisorError):
    """The worker answered, but with an error status (`status`): a wrong key, a bad request."""

    def __init__(self, message: str, status: int, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


class CacheAdminError(MlxctlError):
    """A cache listing, clear or prune cannot be done."""


class TraceError(MlxctlError):
    """A trace cannot be found or read, or recording cannot be switched."""


class ReleaseError(MlxctlError):
    """A release cannot be found, created, or switched to."""
