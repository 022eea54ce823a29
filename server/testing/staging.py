"""A model folder is written beside its place and moved there whole: a builder killed halfway
(a test run stopped, a full disk) never leaves a half-written model that later runs would load."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(destination: Path) -> Iterator[Path]:
    """A fresh folder to write into; on success it replaces `destination`, on failure it goes."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield staging
        shutil.rmtree(destination, ignore_errors=True)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
