"""Snapshot the installed worker's source so a later package upgrade can be undone."""

from __future__ import annotations

import hashlib
import platform
import shutil
from importlib import metadata
from pathlib import Path

import server
from mlxctl.releases.record import BUILTIN, Release, new_release_id
from mlxctl.releases.store import ReleaseStore
from server.edge.contract import option_names

# The worker stands alone (it imports nothing from mlxctl): a release is the worker package.
PACKAGES = (server,)
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


def _package_dirs() -> list[Path]:
    dirs = []
    for package in PACKAGES:
        # A regular package (with an __init__.py) has a file; only a namespace one has none.
        assert package.__file__ is not None, f"{package.__name__} is a namespace package"
        dirs.append(Path(package.__file__).parent)
    return dirs


def copy_sources(destination: Path) -> None:
    """Copy the installed `server` package under `destination`."""
    for source in _package_dirs():
        shutil.copytree(source, destination / source.name, ignore=_IGNORE)


def archive_installed(
    store: ReleaseStore, model: str, note: str = "", distributed: dict | None = None
) -> Release:
    """Record the installed worker (a source snapshot plus its runtime versions) as a release;
    `distributed`: the across-machines layout it runs with (config.distributed_options)."""
    digest = hashlib.sha256()
    for folder in _package_dirs():
        digest.update(source_digest(folder).encode())
    release = Release(
        id=new_release_id(),
        kind=BUILTIN,
        model=model,
        source="src",
        note=note,
        versions={**runtime_versions(), "source_sha256": digest.hexdigest()},
        worker_options=option_names(),
        distributed=dict(distributed or {}),
    )
    return store.create(release, lambda folder: copy_sources(folder / "src"))
