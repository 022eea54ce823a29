"""The house's one-way rules, checked on the source: a wrong-way import fails here first."""

from __future__ import annotations

import ast
import subprocess
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


@pytest.mark.parametrize("package", ["server"])
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


def modules_loaded_by(*args: str) -> set[str]:
    """Top-level packages a real `mlxctl ARGS` run imports (read off `python -X importtime`)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mlxctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "mlxctl" in names, result.stderr[-2000:]
    return names


@pytest.mark.parametrize("command", [["status"], ["cache", "ls"]])
def test_quick_commands_load_no_heavy_packages(command):
    # `status` runs in prompts and watch loops; numpy, mlx and httpx would cost it ~0.1-0.8 s.
    assert modules_loaded_by(*command) & {"numpy", "mlx", "mlx_lm", "httpx"} == set()
