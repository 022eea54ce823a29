"""Which served models `mlxctl cache` covers, and where each one's cache lives right now.

The default model's cache is its worker (through the front door) or `cache/kv`; each
`[models.NAME]` entry's is its own worker (its private address in the status rows) or
`cache/models/NAME`. `--model` picks one by its name or an alias, as the front door would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxctl import paths
from mlxctl.cache_admin import Target
from mlxctl.errors import CacheAdminError
from mlxctl.models.served import DEFAULT, Catalog

CACHE_KEYS = ("cache.ram_bytes", "cache.disk_bytes")  # an entry's own win over the top level


@dataclass
class Served:
    """Every served model's cache target, the default's first; `catalog` maps names to them."""

    targets: dict[str, Target]
    default: str  # the default model's name (a key of `targets`)
    catalog: Catalog

    @property
    def several(self) -> bool:
        return len(self.targets) > 1

    def pick(self, requested: str | None) -> list[Target]:
        """The one model `requested` names (`--model`), or all of them (None)."""
        if requested is None:
            return list(self.targets.values())
        route = self.catalog.route_of(requested) if requested else None
        name = self.default if route == DEFAULT else route
        if name is None and requested in self.targets:
            name = requested  # served now, though no longer configured
        if name is None or name not in self.targets:
            raise CacheAdminError(
                f"no served model is named {requested!r}",
                hint=f"the served models: {', '.join(self.targets)}",
            )
        return [self.targets[name]]


def served(settings: dict[str, Any] | None = None, now: Any = None) -> Served:
    """The served models from the config and the supervisor's status rows (when it runs)."""
    settings = _settings() if settings is None else settings
    now = _status() if now is None else now
    entries = settings.get("models") or {}
    rows = {r.get("name"): r for r in getattr(now, "models", None) or [] if isinstance(r, dict)}
    default_row = next((r for r in rows.values() if r.get("default")), None)
    default_name = (default_row or {}).get("name") or getattr(now, "model", None)
    default_name = default_name or settings.get("model") or "demo"
    extra = [n for n, r in rows.items() if n and not r.get("default") and n not in entries]
    several = bool(entries or extra)

    running = bool(getattr(now, "running", False) and getattr(now, "url", None))
    default = Target(now.url, now.model, now.release) if running else Target(None)
    default.name = default_name if several else None
    targets = {default_name: default}
    for name in (*entries, *extra):
        row = rows.get(name) or {}
        url = row.get("worker_url") if row.get("state") == "running" else None
        folder = row.get("cache_dir") if name in extra else None
        own = entries[name].settings if name in entries else {}
        keys = {k: own.get(k, settings.get(k)) for k in CACHE_KEYS}
        where = Path(folder) if isinstance(folder, str) else paths.model_cache_dir(name)
        targets[name] = Target(url, name, name=name, folder=where, settings=keys)

    path = settings.get("model") or getattr(now, "model_path", None) or ""
    names = (default_name, path, os.path.basename(str(path).rstrip("/")))
    catalog = Catalog(tuple(dict.fromkeys(n for n in names if n)), entries)
    return Served(targets, default_name, catalog)


def _settings() -> dict[str, Any]:
    """The config; a broken one leaves the default model alone (as before [models.NAME])."""
    from mlxctl import config

    try:
        return config.load()
    except Exception:
        return {}


def _status() -> Any:
    from mlxctl.status import Status, status

    try:
        return status(probe=False)
    except Exception:
        return Status()
