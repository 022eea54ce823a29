"""Releases on disk: immutable records, the `current` pointer and the journal of switches.

Layout under `$MLXCTL_HOME/releases/`: `<id>/release.json` (+ `<id>/src/` for builtin
snapshots), `current` (the id; replaced atomically) and `journal.jsonl` (appended, fsynced).
A release folder becomes visible only once complete, so `current` never names a partial one.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mlxctl import paths
from mlxctl.errors import ReleaseError
from mlxctl.releases.record import Release, new_release_id
from mlxctl.system.statefile import write_text


class ReleaseStore:
    def __init__(self, root: Path | None = None):
        self.root = root or paths.home() / "releases"

    def _dir(self, release_id: str) -> Path:
        if not release_id or "/" in release_id or release_id.startswith("."):
            raise ReleaseError(f"invalid release id {release_id!r}")
        return self.root / release_id

    def create(self, release: Release, populate: Callable[[Path], None] | None = None) -> Release:
        """Write `release` (and let `populate` fill its folder) under a staging name, then
        rename it into place: a crash leaves either nothing or a complete release."""
        paths.ensure_private_dir(self.root)
        final = self._dir(release.id)
        if final.exists():
            raise ReleaseError(f"release {release.id} already exists")
        staging = Path(tempfile.mkdtemp(prefix=f".{release.id}.", dir=self.root))
        try:
            if populate:
                populate(staging)
            (staging / "release.json").write_text(json.dumps(release.to_dict(), indent=2))
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return release

    def derive(self, base: Release, **changes) -> Release:
        """Create a new release from `base` with `changes` (a new id and time). A builtin base's
        source snapshot is copied along, so the variant runs the same worker code."""
        release = replace(base, id=new_release_id(), created=time.time(), **changes)
        name = base.source
        source = self.folder(base.id) / name if name else None

        def copy_source(folder: Path) -> None:
            if source is not None and name:  # both: source is set exactly when name is
                shutil.copytree(source, folder / name)

        return self.create(release, copy_source)

    def get(self, release_id: str) -> Release:
        path = self._dir(release_id) / "release.json"
        if not path.is_file():
            raise ReleaseError(f"no release {release_id!r}", hint="see `mlxctl release ls`")
        return _read(path)

    def folder(self, release_id: str) -> Path:
        return self._dir(release_id)

    def list(self) -> list[Release]:
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            if not child.name.startswith(".") and (child / "release.json").is_file():
                found.append(_read(child / "release.json"))
        return sorted(found, key=lambda r: r.created)

    def current_id(self) -> str | None:
        pointer = self.root / "current"
        if not pointer.is_file():
            return None
        release_id = pointer.read_text().strip()
        return release_id if (self._dir(release_id) / "release.json").is_file() else None

    def current(self) -> Release | None:
        release_id = self.current_id()
        return self.get(release_id) if release_id else None

    def set_current(self, release_id: str, reason: str = "set") -> None:
        """Point `current` at a complete release, then journal the move (`reason`: how)."""
        self.get(release_id)  # must exist and be complete before anything points at it
        paths.ensure_private_dir(self.root)
        write_text(self.root / "current", release_id + "\n")
        self.record("current", outcome="ok", to=release_id, reason=reason)

    def record(self, action: str, **fields) -> dict:
        """Append one journal entry (a switch, its outcome, the failed step)."""
        paths.ensure_private_dir(self.root)
        entry = {"at": time.time(), "action": action, **fields}
        with (self.root / "journal.jsonl").open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    def journal(self) -> builtins.list[dict]:
        path = self.root / "journal.jsonl"
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write: the rest of the journal still counts
        return entries

    def history(self) -> builtins.list[str]:
        """Releases in the order they became current, as a stack: a rollback (or the restore after a
        failed switch) pops back to its target, every other move pushes."""
        stack: list[str] = []
        for entry in self.journal():
            target = entry.get("to")
            if entry.get("action") != "current" or not target:
                continue
            if entry.get("reason") in ("rollback", "restore") and target in stack:
                del stack[stack.index(target) + 1 :]
            elif not stack or stack[-1] != target:
                stack.append(target)
        return stack

    def previous_id(self) -> str | None:
        """Where `mlxctl rollback` goes: the release below the current one in the history."""
        stack, current = self.history(), self.current_id()
        if current and (not stack or stack[-1] != current):
            stack.append(current)  # switched by a command killed before it wrote its journal line
        return stack[-2] if len(stack) >= 2 else None


def _read(path: Path) -> Release:
    """One release.json; damage (hand edits, a disk fault) is a ReleaseError, never a traceback."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        return Release.from_dict(data)
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise ReleaseError(
            f"release {path.parent.name} is damaged: cannot read {path} ({exc})",
            hint=f"restore that file, or move {path.parent} out of the releases folder",
        ) from exc
