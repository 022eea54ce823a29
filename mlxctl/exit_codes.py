"""mlxctl's exit codes, by name. Scripts rely on them: `status` 0 running, 3 not, 4 unknown."""

from __future__ import annotations

OK = 0
FAILURE = 1  # a user error or a failed operation (the message says which)
USAGE = 2  # Typer/Click's own code for a bad command line
NOT_RUNNING = 3  # `status`: no supervisor or worker is up (LSB's "program is not running")
UNKNOWN = 4  # `status`: the state cannot be read
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
