"""`python -m server.launch [mlx.launch options] -- python -m server ...`: mlx.launch, as a
supervisor needs it to run the ranks as one unit.

- SIGTERM and SIGINT reach the whole process group, ranks included: rank 0 stops gracefully
  and the others follow it, so the launcher itself only waits for them (mlx.launch would die at
  once and leave the ranks without their parent).
- mlx.launch's I/O loop polls its ranks' stdin for writability, which never blocks: with
  nothing to forward (a supervised worker reads no stdin) it would spin a core. Its select
  waits on reads only here, and its own stdin is a pipe nobody writes.
- It exits 1 when a rank failed (mlx.launch itself exits 0 either way).
"""

from __future__ import annotations

import os
import select
import signal
import sys


def _reads_only(rlist, wlist, xlist, timeout=None):
    ready, _, errors = select.select(rlist, [], xlist, timeout)
    return ready, list(wlist), errors  # a write is attempted only with bytes to forward: none


def main(argv: list[str] | None = None) -> None:
    from mlx._distributed_utils import launch

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet, _ = os.pipe()
    os.dup2(quiet, 0)
    launch.select = _reads_only
    sys.argv = ["mlx.launch", *(sys.argv[1:] if argv is None else argv)]
    # mlx.launch exits 0 whatever its ranks did; it warns about each that failed: exit 1 then.
    failures: list[str] = []
    warn = launch.log_warning

    def noted(*parts, **kwargs):
        failures.append(" ".join(map(str, parts)))
        warn(*parts, **kwargs)

    launch.log_warning = noted
    launch.main()
    failed = [f for f in failures if "exited with code" in f or "was killed" in f]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
