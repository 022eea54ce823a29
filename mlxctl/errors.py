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
