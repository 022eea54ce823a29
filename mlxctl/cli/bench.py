"""`mlxctl bench`: run `bench/agentic.py`, our worker vs mlx_lm.server on a Claude Code session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from mlxctl.errors import MlxctlError

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "agentic.py"


def bench(ctx: typer.Context) -> None:
    """Benchmark our worker against mlx_lm.server on a Claude Code session.

    Prints time to first token per turn, the ratios and the targets. Options go to the script:
    `mlxctl bench --help` shows its own (--model, --turns, --quick, --fixtures).
    """
    if not SCRIPT.exists():
        raise MlxctlError(
            f"benchmark script not found at {SCRIPT}",
            hint="`mlxctl bench` needs a source checkout of mlxctl",
        )
    # A subprocess: the benchmark starts and kills servers and imports mlx; the CLI does neither.
    code = subprocess.call([sys.executable, str(SCRIPT), *ctx.args])
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command(
        "bench",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
    )(bench)
