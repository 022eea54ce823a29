"""Single key presses for `--watch` views: `q` ends them (Ctrl-C too, through the boundary)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def keys_unbuffered() -> Iterator[None]:
    """Let `quit_pressed` see a key without Enter (cbreak keeps Ctrl-C a signal); restored after."""
    fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None
    if fd is None:
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def quit_pressed(timeout: float) -> bool:
    """Wait up to `timeout` seconds; True when `q` was pressed on the terminal meanwhile."""
    if not sys.stdin or not sys.stdin.isatty():
        time.sleep(timeout)
        return False
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sys.stdin], [], [], left)
        if ready and os.read(sys.stdin.fileno(), 1).lower() == b"q":
            return True
    return False
