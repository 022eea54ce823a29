"""The house's one-way rules, checked on the source: a wrong-way import fails here first."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-local imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def offenders(folder: str, banned: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if any(relative.startswith(prefix) for prefix in skip):
            continue
        for module in sorted(imported_modules(path)):
            if any(module == b or module.startswith(b + ".") for b in banned):
                bad.append(f"{relative} imports {module}")
    return bad


def test_the_worker_never_imports_the_supervisor():
    assert offenders("server", ("mlxctl",)) == []


@pytest.mark.parametrize("protocol", ["server/openai_api", "server/anthropic_api"])
def test_protocol_adapters_touch_neither_mlx_nor_the_prefix_cache(protocol):
    assert offenders(protocol, ("mlx", "mlx_lm", "server.prefix_cache")) == []


@pytest.mark.parametrize("package", ["server", "mlxctl"])
def test_no_module_is_over_400_lines(package):
    long = {
        path.relative_to(REPO_ROOT).as_posix(): lines
        for path in (REPO_ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 400
    }
    assert long == {}


def test_the_scan_sees_function_local_imports(tmp_path):
    # The scan must catch an import hidden inside a function, or the rules above are void.
    sample = tmp_path / "server" / "sample.py"
    sample.parent.mkdir()
    sample.write_text("def f():\n    from mlxctl.paths import home\n")
    assert imported_modules(sample) == {"mlxctl.paths"}


def test_the_core_never_imports_the_cli_or_the_daemon():
    # Only the CLI package may; the daemon itself is its own top floor.
    banned = ("typer", "rich", "mlxctl.supervisor.daemon", "mlxctl.cli")
    skip = ("mlxctl/__main__.py", "mlxctl/cli/", "mlxctl/supervisor/daemon.py")
    assert offenders("mlxctl", banned, skip) == []


def test_the_ground_floor_imports_only_the_ground():
    # mlxctl/system/: stdlib, psutil, the error tree and the worker's stdlib-only edge modules.
    allowed = {"psutil", "mlxctl.errors", "server.atomic", "server.blas", "server.contract"}
    allowed_prefixes = ("mlxctl.system", "mlxctl.errors", "server.atomic", "server.contract")
    bad = []
    for path in sorted((REPO_ROOT / "mlxctl" / "system").glob("*.py")):
        for module in imported_modules(path):
            root = module.split(".")[0]
            if root in sys.stdlib_module_names or module in allowed:
                continue
            if module in ("mlxctl", "server") or module.startswith(allowed_prefixes):
                continue
            bad.append(f"{path.name} imports {module}")
    assert bad == []


def test_only_the_process_layer_signals_groups_or_spawns():
    # One way to stop a process group: every killpg and Popen lives in mlxctl/system/processes.py.
    bad = []
    for path in sorted((REPO_ROOT / "mlxctl").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).as_posix()
        if relative == "mlxctl/system/processes.py":
            continue
        text = path.read_text()
        bad += [f"{relative}: {word}" for word in ("killpg", "Popen(") if word in text]
    assert bad == []
