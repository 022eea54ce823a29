"""`mlxctl status` rendering and `--watch` (no worker needed)."""

from __future__ import annotations

import os

import pexpect
from rich.console import Console

from mlxctl import exit_codes
from mlxctl.cli.status_view import status_table
from mlxctl.status import status
from tests.fixtures_supervisor import MLXCTL


def render(st: dict) -> str:
    console = Console(width=120, record=True)
    console.print(status_table(st))
    return console.export_text()


def test_table_shows_what_the_worker_reports(mlxctl_home):
    report = status()
    assert report.exit_code == exit_codes.NOT_RUNNING
    st = report.to_dict()
    st.update(
        state="RUNNING",
        worker_pid=12,
        supervisor_pid=11,
        uptime_seconds=3700,
        restarts=2,
        last_exit={"code": -9, "reason": "exited unexpectedly (killed by SIGKILL)"},
        url="http://127.0.0.1:8080",
        model="demo",
        health="ok",
        worker_rss_bytes=300 * 1024**2,
        memory={"active_bytes": 2 * 1024**3, "peak_bytes": 3 * 1024**3},
        cache={
            "ram": {"entries": 4, "bytes": 5 * 1024**2, "budget_bytes": 10 * 1024**2},
            "disk": {"entries": 1, "bytes": 1024},
            "hits": 3,
            "misses": 1,
            "ram_hits": 3,
            "hit_rate": 0.75,
        },
        tokens_reused=9000,
        cache_hit_rate=0.9,
    )
    text = render(st)
    for expected in (
        "RUNNING",
        "1h 1m",
        "exited unexpectedly (killed by SIGKILL)",
        "active 2.0 GiB, peak 3.0 GiB",
        "█████░░░░░ 5.0 MiB / 10.0 MiB",
        "5.0 MiB / 10.0 MiB",
        "1.0 KiB / -",
        "300.0 MiB",
    ):
        assert expected in text, expected
    assert "None" not in text


def test_watch_refreshes_until_ctrl_c(mlxctl_home):
    env = dict(os.environ, MLXCTL_HOME=str(mlxctl_home))
    child = pexpect.spawn(
        MLXCTL, ["status", "--watch", "--interval", "0.2"], env=env, timeout=20, encoding="utf-8"
    )
    try:
        child.expect("STOPPED")
        child.expect("STOPPED")  # refreshed at least once
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 130
    finally:
        child.close(force=True)


def test_status_never_imports_mlx(mlxctl_home):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mlxctl.cli import main\n"
        "sys.argv = ['mlxctl', 'status', '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('mlx', 'mlx_lm', 'httpx', 'tomlkit') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = dict(os.environ, MLXCTL_HOME=str(mlxctl_home))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
