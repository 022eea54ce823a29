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


# What mlxctl may import of the worker: stdlib-only modules (and the package, for its folder).
EDGE = (
    "edge.contract",
    "edge.blas",
    "edge.atomic",
    "edge.model_ref",
    "edge.logfile",
    "edge.hosts",
    "edge.model_listing",
    "edge.resume_wire",
    "prefix_cache.disk_index",
)
SKIP_WIRING = ("server/prefix_cache/", "server/serve.py", "server/testing/")


def imports_under(folder: str) -> list[tuple[str, str]]:
    return [
        (path.relative_to(REPO_ROOT).as_posix(), module)
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        for module in sorted(imported_modules(path))
    ]


def module_graph(package: str, root: Path = REPO_ROOT) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (`from a import b` names a.b where b is a
    module; relative imports resolved), function-local and type-checking imports included."""
    files = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (root / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                targets = targets or [base]
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def circles(package: str, root: Path = REPO_ROOT) -> list[list[str]]:
    """Each group of modules that import one another, directly or round about (Tarjan)."""
    graph = module_graph(package, root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_worker_never_imports_the_supervisor():
    assert offenders("server", ("mlxctl",)) == []


@pytest.mark.parametrize("protocol", ["server/api/openai", "server/api/anthropic"])
def test_protocol_adapters_touch_neither_mlx_nor_the_prefix_cache(protocol):
    assert offenders(protocol, ("mlx", "mlx_lm", "server.prefix_cache")) == []


def test_the_http_side_never_touches_mlx():
    assert offenders("server/api", ("mlx", "mlx_lm")) == []


def test_the_engine_never_imports_the_http_side():
    assert offenders("server/engine", ("server.api",)) == []


@pytest.mark.parametrize(
    "folder",
    [
        "server/prompt",
        "server/decoding",
        "server/speculative",
        "server/model",
        "server/prefix_cache",
    ],
)
def test_the_floors_below_the_engine_never_call_up(folder):
    assert offenders(folder, ("server.engine", "server.api", "server.serve")) == []


def test_only_the_composition_root_wires_the_prefix_cache():
    # Outside prefix_cache/, the worker sees only the seam; serve.py builds what is behind it.
    seam = "server.prefix_cache.seam"
    bad = [
        line
        for line in offenders("server", ("server.prefix_cache",), skip=SKIP_WIRING)
        if not line.endswith(f"imports {seam}")
    ]
    assert bad == []


def test_the_supervisor_imports_only_the_workers_edge():
    edge = {f"server.{name}" for name in EDGE}
    bad = [
        f"{path} imports {module}"
        for path, module in imports_under("mlxctl")
        if (module == "server" or module.startswith("server."))
        and module not in edge
        and module not in ("server", "server.edge")
    ]
    assert bad == []


def test_the_edge_is_stdlib_only():
    # mlxctl imports these without loading MLX, numpy or the web stack.
    allowed = {f"server.{name}" for name in EDGE}
    bad = []
    for name in EDGE:
        path = REPO_ROOT / "server" / (name.replace(".", "/") + ".py")
        for module in imported_modules(path):
            if module.split(".")[0] in sys.stdlib_module_names or module in allowed:
                continue
            bad.append(f"{name} imports {module}")
    assert bad == []


@pytest.mark.parametrize("package", ["server", "mlxctl", "tests", "bench"])
def test_no_import_circles(package):
    assert circles(package) == []


def test_the_circle_check_sees_a_circle(tmp_path):
    # Two modules that import each other, one of them inside a function, make a circle.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import x\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import a\n")
    assert circles("pkg", root=tmp_path) == [["pkg.a", "pkg.b"]]


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
    edge = ("server.edge", "server.edge.atomic", "server.edge.blas", "server.edge.contract")
    allowed = {"psutil", "mlxctl.errors", *edge}
    allowed_prefixes = ("mlxctl.system", "mlxctl.errors", *edge)
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
