"""Snapshot the installed worker's source so a later package upgrade can be undone."""

from __future__ import annotations

import hashlib
import platform
import shutil
from importlib import metadata
from pathlib import Path

import mlxctl
import server

# The worker imports a few mlxctl modules (model names, BLAS lookup): snapshot both packages.
PACKAGES = (server, mlxctl)
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def runtime_versions() -> dict[str, str]:
    """Versions the snapshot runs with (read from package metadata: no mlx import)."""
    return {
        "mlxctl": _version("mlxctl"),
        "mlx": _version("mlx"),
        "mlx-lm": _version("mlx-lm"),
        "python": platform.python_version(),
    }


def source_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def copy_sources(destination: Path) -> str:
    """Copy the installed `server` and `mlxctl` packages under `destination`; return a digest."""
    for package in PACKAGES:
        source = Path(package.__file__).parent
        shutil.copytree(source, destination / source.name, ignore=_IGNORE)
    return source_digest(destination)
