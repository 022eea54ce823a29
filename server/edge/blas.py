"""Find a system OpenBLAS so a CPU worker can preload it (mlx's CPU wheel bundles a slow BLAS)."""

from __future__ import annotations

import glob
import os
import sys

# Debian/Ubuntu's libopenblas0-pthread, then other common layouts.
_CANDIDATES = [
    "/usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/*-linux-gnu/openblas-openmp/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
]


def find_openblas() -> str | None:
    """Path of a system OpenBLAS `libblas`, or None (and always None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    for pattern in _CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            if os.path.exists(path):
                return path
    return None


def worker_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to spawn a worker with: OpenBLAS preloaded on Linux when installed."""
    env = dict(os.environ if base is None else base)
    blas = find_openblas()
    if blas and blas not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (blas, env.get("LD_PRELOAD", "")) if p)
    return env


def reexec_with_openblas() -> None:
    """Restart this process once with a system OpenBLAS preloaded, where one is installed (call
    it before mlx is imported: the library binds its BLAS at load)."""
    blas = find_openblas()
    if blas and blas not in os.environ.get("LD_PRELOAD", ""):
        # orig_argv keeps interpreter flags such as -P (no cwd on sys.path) across the re-exec.
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], worker_env())
