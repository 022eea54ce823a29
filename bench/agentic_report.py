"""The agentic bench's report: time to first token per request, the life cycle in wall seconds,
and the targets of the prefix cache (met or missed)."""

from __future__ import annotations

import statistics

from bench.agentic_requests import Sample
from bench.agentic_run import Run

# Targets of issue 5 (ratios of time to first token).
FOLLOW_UP_VS_COLD = 20.0
RESTART_VS_COLD = 10.0
SESSION2_VS_MLX_LM = 10.0
NO_WORSE_SLACK = 1.10  # "no worse than mlx_lm.server" allows 10% timing noise per turn


def life_rows(run: Run | None, turns: int) -> dict[str, float | None]:
    """Wall seconds to the first token: cold start, after a restart, after a kill -9."""
    if run is None:
        return {}
    life = run.life
    restart, crash = f"{turns + 1} (restart)", f"{turns + 2} (kill -9)"

    def total(bounce: float | None, label: str) -> float | None:
        ttft = _ttft(run, label)
        return None if bounce is None or ttft is None else bounce + ttft

    return {
        "cold start to first token": total(run.startup[0] if run.startup else None, "0 (cold)"),
        "restart to first token": total(life.get(f"bounce {restart}"), restart),
        "kill -9 to first token": total(life.get(f"bounce {crash}"), crash),
    }


def print_life(console, ours: Run | None, mlx: Run | None, turns: int) -> None:
    from rich.table import Table

    table = Table(title="life cycle (wall seconds; stop/kill + start + time to first token)")
    for col in ("row", "ours", "mlx_lm.server", "target (ours)"):
        table.add_column(col, justify="right")
    a, b = life_rows(ours, turns), life_rows(mlx, turns)
    load = ours.startup[0] if ours and ours.startup else None
    follow = [t for i in range(1, turns + 1) if (t := _ttft(ours, str(i))) is not None]
    bound = load + 2 + statistics.median(follow) if load and follow else None
    for row in a or b:
        target = ""
        value = a.get(row)
        if row != "cold start to first token" and bound is not None and value is not None:
            met = "met" if value <= bound else "MISSED"
            target = f"<= {bound:.2f} (load + 2 s + follow-up): {met}"
        table.add_row(row, _fmt(a.get(row), ""), _fmt(b.get(row), ""), target)
    life = ours.life if ours else {}
    if life.get("entry_bytes"):
        ratio = life["ram_bytes"] / life["entry_bytes"]
        table.add_row(
            "RAM held after the session / one entry",
            f"{ratio:.2f}x ({life['ram_entries']} entries)",
            "-",
            f"<= 1.3x: {'met' if ratio <= 1.3 else 'MISSED'}",
        )
    console.print(table)


def _ttft(run: Run | None, label: str) -> float | None:
    if run is None:
        return None
    for s in run.samples:
        if s.label == label and s.error is None:
            return s.ttft
    return None


def _fmt(x: float | None, unit: str = "s") -> str:
    return "-" if x is None else f"{x:.2f}{unit}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def targets(ours: Run | None, mlx: Run | None, turns: int) -> list[tuple[str, str, bool | None]]:
    """(description, measured, met) for the four targets; met None when not measurable."""
    out = []
    cold = _ttft(ours, "0 (cold)")
    follow = [t for i in range(1, turns + 1) if (t := _ttft(ours, str(i))) is not None]
    median = statistics.median(follow) if follow else None
    r = _ratio(cold, median)
    out.append(
        (
            f"follow-up turn >= {FOLLOW_UP_VS_COLD:g}x faster than the cold first turn",
            f"{_fmt(r, 'x')} (cold {_fmt(cold)}, median follow-up {_fmt(median)})",
            None if r is None else r >= FOLLOW_UP_VS_COLD,
        )
    )
    restart = _ttft(ours, f"{turns + 1} (restart)")
    r = _ratio(cold, restart)
    out.append(
        (
            f"first request after a restart >= {RESTART_VS_COLD:g}x faster than cold",
            f"{_fmt(r, 'x')} (restart {_fmt(restart)})",
            None if r is None else r >= RESTART_VS_COLD,
        )
    )
    labels = [s.label for s in ours.samples] if ours else []
    timed = [(lbl, _ttft(ours, lbl), _ttft(mlx, lbl)) for lbl in labels]
    pairs = [(lbl, a, b) for lbl, a, b in timed if a is not None and b is not None]
    worse = [lbl for lbl, a, b in pairs if a > b * NO_WORSE_SLACK]
    out.append(
        (
            "per-turn time no worse than mlx_lm.server's (10% slack)",
            f"{len(pairs) - len(worse)}/{len(pairs)} turns"
            + (f"; worse: {', '.join(worse)}" if worse else ""),
            None if not pairs else not worse,
        )
    )
    r = _ratio(_ttft(mlx, "session 2"), _ttft(ours, "session 2"))
    out.append(
        (
            f"second session >= {SESSION2_VS_MLX_LM:g}x faster than mlx_lm.server's",
            f"{_fmt(r, 'x')} (ours {_fmt(_ttft(ours, 'session 2'))}, "
            f"mlx_lm {_fmt(_ttft(mlx, 'session 2'))})",
            None if r is None else r >= SESSION2_VS_MLX_LM,
        )
    )
    return out


def print_report(console, ours: Run | None, mlx: Run | None, args) -> None:
    from rich.table import Table

    table = Table(title="time to first token per request (seconds)")
    for col in (
        "turn",
        "ours",
        "ours cached/prompt",
        "mlx_lm.server",
        "mlx_lm cached/prompt",
        "mlx_lm / ours",
        "ours cold / this",
    ):
        table.add_column(col, justify="right")
    labels = [s.label for s in either.samples] if (either := ours or mlx) else []
    cold = _ttft(ours, "0 (cold)")

    def sample(run, label):
        return next((s for s in run.samples if s.label == label), None) if run else None

    for label in labels:
        a, b = sample(ours, label), sample(mlx, label)
        table.add_row(
            label,
            _cell(a),
            _tokens(a),
            _cell(b),
            _tokens(b),
            _fmt(_ratio(_ttft(mlx, label), _ttft(ours, label)), "x"),
            "" if label == "0 (cold)" else _fmt(_ratio(cold, _ttft(ours, label)), "x"),
        )
    console.print(table)
    print_life(console, ours, mlx, args.turns)
    for run in (ours, mlx):
        if run and run.error:
            console.print(f"[red]{run.name} failed:[/] {run.error}")
    for text, measured, met in targets(ours, mlx, args.turns):
        mark = {True: "[green]met[/]", False: "[red]MISSED[/]", None: "[yellow]n/a[/]"}[met]
        console.print(f"{mark:>18}  {text}: {measured}")


def _cell(s: Sample | None) -> str:
    if s is None:
        return "-"
    return "error" if s.error else _fmt(s.ttft, "")


def _tokens(s: Sample | None) -> str:
    if s is None or s.prompt_tokens is None:
        return "-"
    return f"{s.cached_tokens if s.cached_tokens is not None else '?'}/{s.prompt_tokens}"
