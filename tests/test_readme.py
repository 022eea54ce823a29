"""The README tells the truth: its first commands, and a Layout tree that matches the folders."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
README = (REPO_ROOT / "README.md").read_text()
NAME_COLUMN = 30  # the tree's descriptions start here


def layout_block() -> list[str]:
    section = README.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 2)[1].splitlines()


def named_paths(lines: list[str]) -> list[str]:
    """Every path the tree's name column names, resolved through its indentation (2 a level)."""
    parents: list[str] = []
    paths = []
    for line in lines:
        names = line[:NAME_COLUMN].split()
        if not names:
            continue  # a description carried over
        depth = (len(line) - len(line.lstrip())) // 2
        parents = parents[:depth]
        for name in names:
            paths.append("".join(parents) + name)
        if names[-1].endswith("/"):
            parents.append(names[-1])
    return paths


def test_the_readme_opens_with_how_to_get_uv_then_the_two_commands():
    head = README.split("```", 2)
    assert "uv" in head[0] and "install" in head[0]  # a fresh machine has no uv
    commands = [line.split("#")[0].strip() for line in head[1].splitlines()[1:] if line.strip()]
    assert commands == ["uv run mlxctl start", "uv run pytest"]


def test_every_path_the_layout_names_exists():
    missing = [p for p in named_paths(layout_block()) if not (REPO_ROOT / p).exists()]
    assert missing == []


def test_the_layout_names_every_folder_and_every_worker_module():
    block = "\n".join(layout_block())
    named = set(named_paths(layout_block()))
    # Every folder of both packages; the tests' top folders (below them, tests/server/ mirrors).
    folders = [
        path.relative_to(REPO_ROOT).as_posix() + "/"
        for path in [
            *(REPO_ROOT / "server").rglob("*"),
            *(REPO_ROOT / "mlxctl").rglob("*"),
            *(REPO_ROOT / "tests").glob("*"),
        ]
        if path.is_dir() and path.name != "__pycache__"
    ]
    assert [f for f in folders if f not in named] == []
    words = set(re.findall(r"[\w.]+", block))
    modules = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in sorted((REPO_ROOT / "server").rglob("*.py"))
        if path.name != "__init__.py"
    ]
    unnamed = [m for m in modules if m not in named and Path(m).name not in words]
    unnamed = [m for m in unnamed if Path(m).stem not in words]
    assert unnamed == []


def test_the_parser_follows_indentation():
    lines = ["a/                            x", "  b.py c/                     y", "    d.py"]
    assert named_paths(lines) == ["a/", "a/b.py", "a/c/", "a/c/d.py"]
