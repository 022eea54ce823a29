"""The `mlxctl` console script. Plain `mlxctl status [--json]` is answered without Typer: Typer
builds a pydantic adapter per option, which alone costs ~0.25 s (status runs in prompts and watch
loops); everything else goes to the Typer app in `mlxctl.cli.root`.
"""

from __future__ import annotations

import sys
from typing import Any

from mlxctl import exit_codes

# The argument lists the quick path answers; any other (--help, --watch, typos) goes to Typer.
QUICK_STATUS = (["status"], ["status", "--json"])


def main() -> None:
    argv = sys.argv[1:]
    try:
        if argv in QUICK_STATUS:
            from mlxctl.cli.status_view import show_status

            raise SystemExit(show_status(as_json="--json" in argv))
        from mlxctl.cli.root import app, register_commands

        register_commands(argv)
        app()
    except KeyboardInterrupt:  # Ctrl-C while the command's modules were still importing
        raise SystemExit(exit_codes.INTERRUPTED) from None
    except (SystemExit, MemoryError):
        raise
    except Exception as exc:  # the quick path's boundary; Typer commands meet it inside the app
        from mlxctl.cli.boundary import exit_code_for

        raise SystemExit(exit_code_for(exc)) from None


def __getattr__(name: str) -> Any:
    # `from mlxctl.cli import app, register_commands` keeps working without importing Typer here.
    if name in ("app", "register_commands", "COMMAND_MODULES"):
        from mlxctl.cli import root

        return getattr(root, name)
    raise AttributeError(name)
