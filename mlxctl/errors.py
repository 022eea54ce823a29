"""The errors mlxctl reports to people: one line of what went wrong plus a hint."""

from __future__ import annotations


class MlxctlError(Exception):
    """A failure the CLI prints as one line (plus `hint`) and turns into `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ModelError(MlxctlError):
    """A model cannot be found, imported or removed."""


class UnsupportedModelError(ModelError):
    """The model file uses an architecture or tensor type mlxctl cannot convert."""


class ConfigError(MlxctlError):
    """The config file or a value given for one of its keys is invalid."""


class SupervisorError(MlxctlError):
    """The supervisor or its worker could not be started, stopped or reached."""


class PortInUseError(SupervisorError):
    """Another program already listens on the configured port."""


class StartFailedError(SupervisorError):
    """The worker died or became FATAL before it answered /health."""

    worker_exit_code: int | None = None
    log_tail: list[str] = []  # noqa: RUF012 (read-only default)


class ReleaseError(MlxctlError):
    """A release cannot be found, created, or switched to."""
