"""The house's one-way rules, checked on the source: a wrong-way import fails here first."""

from __future__ import annotations

import ast
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
