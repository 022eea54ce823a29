"""The CLI's one error boundary, without Typer: a user error is one line plus its hint, anything
else one line plus the hint that MLXCTL_DEBUG=1 shows the traceback."""

from __future__ import annotations

import os
import traceback

from mlxctl import exit_codes
from mlxctl.cli.output import output
from mlxctl.errors import MlxctlError

DEBUG_ENV = "MLXCTL_DEBUG"


def exit_code_for(exc: BaseException) -> int:
    """Report `exc` on stderr the way people read it and return the exit code it means."""
    if isinstance(exc, MlxctlError):
        output.fail(str(exc), exc.hint)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return exit_codes.INTERRUPTED
    # A bug, not a user error: one line by default, the traceback on request.
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        output.err.file.write(traceback.format_exc())
        output.fail(f"unexpected {type(exc).__name__}: {exc}")
    else:
        output.fail(
            f"unexpected {type(exc).__name__}: {exc}", hint=f"{DEBUG_ENV}=1 shows the traceback"
        )
    return exit_codes.FAILURE
