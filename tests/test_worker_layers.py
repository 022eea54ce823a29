"""The worker's layering, checked on the source: protocol adapters stay above MLX and the cache."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "server"
PROTOCOL_FILES = sorted([*SERVER.glob("openai_api/*.py"), *SERVER.glob("anthropic_api/*.py")])


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PROTOCOL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_protocol_modules_import_neither_mlx_nor_the_prefix_cache(path):
    banned = ("mlx", "mlx_lm", "server.prefix_cache")
    bad = [n for n in _imports(path) if any(n == b or n.startswith(b + ".") for b in banned)]
    assert not bad, f"{path.name} imports {bad}"


def test_no_worker_module_is_over_400_lines():
    long = {
        str(p.relative_to(SERVER)): n
        for p in SERVER.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long
