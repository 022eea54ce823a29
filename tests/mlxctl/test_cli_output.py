"""What people see: full stdout/stderr and exit codes of CLI commands (hatch-style asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple

import pexpect
import pytest
from typer.testing import CliRunner

from mlxctl import exit_codes
from mlxctl.cli import register_commands
from mlxctl.models import registry
from tests.fixtures_supervisor import MLXCTL

app = register_commands()
GIB = 1024**3


@pytest.fixture(autouse=True)
def plain_terminal(tmp_path, monkeypatch):
    """A private home and a plain, 100-column terminal, so the text is exact."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MLXCTL_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("MLXCTL_DEBUG", raising=False)
    return home


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def lines(text: str) -> list[str]:
    """The text's lines without the padding Rich adds to table cells."""
    return [line.rstrip() for line in text.splitlines()]


def installed_model(home, name: str = "tiny") -> None:
    """A model folder of exactly 2 KiB (registry.describe reads no weights)."""
    folder = home / "models" / name
    folder.mkdir(parents=True)
    config = json.dumps({"model_type": "llama"})
    (folder / "config.json").write_text(config)
    (folder / "model.safetensors").write_bytes(b"\0" * (2048 - len(config)))


def test_status_without_a_supervisor(monkeypatch):
    memory = namedtuple("memory", "total available")
    monkeypatch.setattr("psutil.virtual_memory", lambda: memory(16 * GIB, 12 * GIB))
    result = run("status")
    assert result.exit_code == exit_codes.NOT_RUNNING
    assert lines(result.stdout) == [
        "╭─ service ─────────────────────────────────────╮ ╭─ memory ───────────────────────────────────────╮",  # noqa: E501
        "│ state       STOPPED                           │ │ worker RSS  -                                  │",  # noqa: E501
        "│ model       -                                 │ │ system      12.0 GiB available of 16.0 GiB     │",  # noqa: E501
        "│ release     -                                 │ ╰────────────────────────────────────────────────╯",  # noqa: E501
        "│ front door  -                                 │",
        "│ uptime      -                                 │",
        "│ restarts    0                                 │",
        "│ pids        supervisor -, worker -            │",
        "╰───────────────────────────────────────────────╯",
    ]  # fmt: skip
    assert result.stderr == ""


def test_status_json_is_plain_json(monkeypatch):
    result = run("status", "--json")
    assert result.exit_code == exit_codes.NOT_RUNNING
    assert json.loads(result.stdout)["state"] == "STOPPED"


def test_cache_ls_on_an_empty_home():
    result = run("cache", "ls")
    assert result.exit_code == exit_codes.OK
    assert result.stdout == "the cache is empty\n"
    assert result.stderr == (
        "note: no worker runs, so the RAM tier is empty; showing the disk tier\n"
    )


def test_release_ls_on_an_empty_home():
    result = run("release", "ls")
    assert result.exit_code == exit_codes.OK
    assert result.stdout == (
        "no releases yet; `mlxctl release archive` records the installed worker\n"
    )
    assert result.stderr == ""


def test_release_ls_with_a_damaged_release_json(plain_terminal):
    folder = plain_terminal / "releases" / "r1"
    folder.mkdir(parents=True)
    (folder / "release.json").write_text('{"id": "r1", "kind"')
    result = run("release", "ls")
    assert result.exit_code == exit_codes.FAILURE
    assert result.stdout == ""
    assert lines(result.stderr) == [
        f"error: release r1 is damaged: cannot read {folder / 'release.json'} "
        "(Expecting ':' delimiter: line 1 column 20 (char 19))",
        f"hint: restore that file, or move {folder} out of the releases folder",
    ]


def test_an_unexpected_error_is_one_line_and_a_hint(monkeypatch):
    def broken():
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(registry, "installed", broken)
    result = run("model", "ls")
    assert result.exit_code == exit_codes.FAILURE
    assert result.stdout == ""
    assert result.stderr == (
        "error: unexpected RuntimeError: the disk caught fire\n"
        "hint: MLXCTL_DEBUG=1 shows the traceback\n"
    )


def test_mlxctl_debug_shows_the_traceback(monkeypatch):
    def broken():
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(registry, "installed", broken)
    monkeypatch.setenv("MLXCTL_DEBUG", "1")
    result = run("model", "ls")
    assert result.exit_code == exit_codes.FAILURE
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert 'raise RuntimeError("the disk caught fire")' in result.stderr
    assert result.stderr.endswith("error: unexpected RuntimeError: the disk caught fire\n")


def test_model_rm_dry_run_deletes_nothing(plain_terminal):
    installed_model(plain_terminal)
    result = run("model", "rm", "tiny", "--dry-run")
    assert result.exit_code == exit_codes.OK
    folder = plain_terminal / "models" / "tiny"
    assert result.stdout == (
        f"would free 2.0 KiB (model tiny at {folder}); nothing deleted (dry run)\n"
    )
    assert (folder / "config.json").is_file()


def test_model_rm_without_a_terminal_refuses(plain_terminal):
    installed_model(plain_terminal)
    result = run("model", "rm", "tiny")
    assert result.exit_code == exit_codes.FAILURE
    assert result.stdout == ""
    assert result.stderr == (
        "error: refusing to remove a model without confirmation (stdin is not a terminal)\n"
        "hint: pass --yes to confirm, or --dry-run to see what would be freed\n"
    )
    assert (plain_terminal / "models" / "tiny" / "config.json").is_file()


def test_model_rm_yes_removes_and_reports_the_bytes(plain_terminal):
    installed_model(plain_terminal)
    result = run("model", "rm", "tiny", "--yes")
    assert result.exit_code == exit_codes.OK
    assert result.stdout == "removed tiny (freed 2.0 KiB)\n"
    assert not (plain_terminal / "models" / "tiny").exists()
    assert registry.installed() == []


def test_model_rm_of_a_missing_model():
    result = run("model", "rm", "ghost", "--yes")
    assert result.exit_code == exit_codes.FAILURE
    assert result.stderr == (
        "error: no installed model named 'ghost'\nhint: see `mlxctl model ls`\n"
    )


def test_bench_help_line_fits_the_command_list():
    result = run("--help")
    assert result.exit_code == exit_codes.OK
    bench = [line for line in result.stdout.splitlines() if "│ bench" in line]
    assert len(bench) == 1
    assert "Benchmark our worker against mlx_lm.server on a Claude Code session." in bench[0]


def modules_after(argv: list[str]) -> list[str]:
    """Which heavy packages a real `mlxctl ARGV` run (the console script's main) imported."""
    probe = (
        "import sys\n"
        "from mlxctl.cli import main\n"
        f"sys.argv = ['mlxctl', *{argv!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('httpx', 'numpy', 'mlx', 'mlx_lm', 'typer', 'pydantic')\n"
        "print('HEAVY', *[m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    found = [line for line in result.stdout.splitlines() if line.startswith("HEAVY")]
    assert found, result.stdout + result.stderr
    return found[-1].split()[1:]


@pytest.mark.parametrize(
    "argv", [["status", "--json"], ["cache", "ls"], ["release", "ls"], ["--help"]]
)
def test_light_commands_import_no_heavy_modules(argv):
    """One invocation imports only its command's module: no httpx, numpy or mlx at start-up."""
    assert set(modules_after(argv)) & {"httpx", "numpy", "mlx", "mlx_lm"} == set()


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"]])
def test_plain_status_answers_without_typer(argv):
    # Typer builds a pydantic adapter per option (~0.25 s): the quick path must skip both.
    assert modules_after(argv) == []


def test_quick_status_prints_what_the_typer_command_prints():
    def mlxctl(*args: str) -> tuple[int, list[str]]:
        done = subprocess.run(
            [sys.executable, "-m", "mlxctl", *args], capture_output=True, text=True, timeout=60
        )
        # System RAM moves between the two runs; every other row must be the same.
        return done.returncode, [x for x in lines(done.stdout) if "available of" not in x]

    quick = mlxctl("status")
    through_typer = mlxctl("status", "--interval", "1")  # not a quick argv: Typer parses it
    assert quick == through_typer
    assert quick[0] == exit_codes.NOT_RUNNING and "│ state       STOPPED " in quick[1][1]


@pytest.mark.parametrize(
    ("answer", "code", "said", "kept"),
    [
        ("n", exit_codes.FAILURE, "nothing deleted", True),
        ("y", exit_codes.OK, "removed tiny", False),
    ],
)
def test_model_rm_asks_on_a_terminal(plain_terminal, answer, code, said, kept):
    installed_model(plain_terminal)
    child = pexpect.spawn(
        MLXCTL, ["model", "rm", "tiny"], env=dict(os.environ), timeout=20, encoding="utf-8"
    )
    try:
        child.expect(r"remove model tiny \(2\.0 KiB\)\? \[y/N\]")
        child.sendline(answer)
        child.expect(said)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == code
    finally:
        child.close(force=True)
    assert (plain_terminal / "models" / "tiny").exists() == kept
