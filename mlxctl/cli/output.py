"""The one place mlxctl writes to the terminal: `output`, owning the stdout and stderr consoles.

Results go to stdout (tables, JSON, what was done); notes, hints, errors and spinners go to
stderr, so `mlxctl ... --json | jq` always reads clean JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

from mlxctl.errors import MlxctlError


class Output:
    """Rich consoles for people, plain text for scripts; NO_COLOR and the width come from Rich."""

    def __init__(self) -> None:
        self._out: Console | None = None
        self._err: Console | None = None

    # Built on first use, not at import: Rich reads NO_COLOR and COLUMNS when a console is made,
    # and an invocation (or a CliRunner test) may change them after mlxctl was imported.
    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = Console(highlight=False, emoji=False)  # no :codes:; skips a 40 ms table
        return self._out

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = Console(stderr=True, highlight=False, emoji=False)
        return self._err

    def reset(self) -> None:
        """Forget the consoles; the next use builds them from the current environment."""
        self._out = self._err = None

    def print(self, *objects, **options) -> None:
        """Print a result (Rich markup) on stdout."""
        self.out.print(*objects, **options)

    def plain(self, text: str) -> None:
        """Print `text` verbatim on stdout: no markup, no wrapping (values and log lines)."""
        self.out.file.write(text + "\n")
        self.out.file.flush()

    def json(self, data) -> None:
        """Print `data` as indented JSON on stdout, plain (no colour) so scripts can parse it."""
        self.plain(json.dumps(data, indent=2, default=str))

    def table(self, *columns: str, rows: Iterable[Sequence[str]], **options) -> None:
        """Print a table with these column headers; `options` go to `rich.table.Table`."""
        table = Table(*columns, **options)
        for row in rows:
            table.add_row(*row)
        self.out.print(table)

    def success(self, message: str) -> None:
        """Print what was done, in green."""
        self.out.print(f"[green]{message}[/]")

    def note(self, message: str) -> None:
        """Print a side remark on stderr (`note: ...`)."""
        self.err.print(f"[dim]note:[/] {message}", soft_wrap=True)

    def hint(self, message: str) -> None:
        """Print what to try next on stderr (`hint: ...`)."""
        self.err.print(f"[dim]hint:[/] {message}", soft_wrap=True)

    def fail(self, message: str, hint: str | None = None) -> None:
        """Print an error as one line plus an optional hint, on stderr."""
        self.err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        if hint:
            self.hint(hint)

    def confirm(self, question: str, *, yes: bool, action: str) -> bool:
        """True when `--yes` was given or the user agrees on a terminal. Without a terminal
        (scripts, CI) nobody can answer, so refuse rather than guess."""
        if yes:
            return True
        if not sys.stdin or not sys.stdin.isatty():
            raise MlxctlError(
                f"refusing to {action} without confirmation (stdin is not a terminal)",
                hint="pass --yes to confirm, or --dry-run to see what would be freed",
            )
        import typer  # only here: `status` prints through this module and must not load Typer

        return typer.confirm(question, default=False)


output = Output()
