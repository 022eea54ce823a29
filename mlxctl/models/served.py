"""`[models.NAME]` config entries: several models served by name, and which one a request means.

Each entry names what to load (`path`), alias globs (`claude-haiku-*`), an idle time after which
its worker stops, whether it is pinned, and a few worker keys of its own that win over the
top-level ones. The top-level `model` stays the default: always served, and the one any other
`claude-*` name means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from mlxctl.errors import ConfigError
from mlxctl.units import parse_duration

DEFAULT = ""  # the route key of the top-level model
# Top-level keys an entry may set for its own worker (a user's per-model value wins).
WORKER_KEYS = (
    "tool_parser",
    "speculative",
    "draft_model",
    "draft_cache.entries",
    "draft_cache.max_bytes",
    "cache.ram_bytes",
    "cache.disk_bytes",
    "batch.decode_concurrency",
    "batch.prompt_concurrency",
    "batch.kv_budget_bytes",
    "restart.startup_timeout",
)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NEVER = ("0", "never", "")
# Claude Code's model families: `mlxctl claude` points each at the entry whose alias takes it.
CLAUDE_FAMILIES = {"opus": "claude-opus-4-5", "sonnet": "claude-sonnet-4-5",
                   "haiku": "claude-haiku-4-5"}  # fmt: skip


@dataclass(frozen=True)
class ServedModel:
    name: str
    path: str
    aliases: tuple[str, ...] = ()
    idle_unload: float = 0.0  # seconds; 0 = never
    pinned: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # its own worker keys

    def answers_to(self, requested: str) -> bool:
        return requested == self.name or any(fnmatchcase(requested, a) for a in self.aliases)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "aliases": list(self.aliases), "idle_unload": self.idle_unload,
                "pinned": self.pinned, **self.settings}  # fmt: skip


def _flat(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"cache": {"ram_bytes": 1}} -> {"cache.ram_bytes": 1}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _duration(where: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f'config key {where!r} expects a duration such as "15m" or "never"')
    if isinstance(value, int | float):
        return max(0.0, float(value))
    text = str(value).strip().lower()
    if text in NEVER:
        return 0.0
    try:
        return parse_duration(text)
    except Exception:
        raise ConfigError(
            f'config key {where!r} expects a duration such as "15m" or "never", got {value!r}'
        ) from None


def parse_entry(name: str, table: Any, check: Callable[[str, Any], Any]) -> ServedModel:
    """One `[models.NAME]` table, validated; `check(key, value)` types a top-level worker key."""
    where = f"models.{name}"
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: a model's name is letters, digits, '.', '_' or '-'")
    if not isinstance(table, Mapping):
        raise ConfigError(f"config key {where!r} must be a table ([{where}])")
    values = _flat(table)
    path = values.pop("path", None)
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"config key '{where}.path' is required: an installed model's name, "
                          "a local MLX folder or a hub id")  # fmt: skip
    aliases = values.pop("aliases", [])
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigError(f"config key '{where}.aliases' expects a list of names or globs, "
                          f"e.g. [\"claude-haiku-*\"], got {aliases!r}")  # fmt: skip
    idle = _duration(f"{where}.idle_unload", values.pop("idle_unload", 0))
    pinned = values.pop("pinned", False)
    if not isinstance(pinned, bool):
        raise ConfigError(f"config key '{where}.pinned' expects true or false, got {pinned!r}")
    settings = {}
    for key, value in values.items():
        if key not in WORKER_KEYS:
            known = ", ".join(("path", "aliases", "idle_unload", "pinned", *WORKER_KEYS))
            raise ConfigError(f"unknown config key '{where}.{key}'", hint=f"known: {known}")
        try:
            settings[key] = check(key, value)
        except ConfigError as exc:
            named = str(exc).replace(f"'{key}'", f"'{where}.{key}'")
            raise ConfigError(named, hint=exc.hint) from None
    return ServedModel(name, path.strip(), tuple(aliases), idle, pinned, settings)


def parse_table(table: Any, check: Callable[[str, Any], Any]) -> dict[str, ServedModel]:
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ConfigError("config key 'models' must hold [models.NAME] tables")
    return {name: parse_entry(name, entry, check) for name, entry in table.items()}


class Catalog:
    """The names a request may use and the route each means: an entry's name or alias, else
    the default model (its own names and any other `claude-*`), else nothing (a 404)."""

    def __init__(self, default_names: tuple[str, ...], models: Mapping[str, ServedModel]):
        self.default_names = default_names
        self.models = dict(models)

    @property
    def several(self) -> bool:
        return bool(self.models)

    def route_of(self, requested: str) -> str | None:
        """The route key (DEFAULT or an entry's name) for a request's `model`; None: unknown."""
        if requested in self.models:
            return requested
        for entry in self.models.values():
            if entry.answers_to(requested):
                return entry.name
        if not requested or requested in self.default_names or requested.startswith("claude-"):
            return DEFAULT
        return None

    def family_models(self) -> dict[str, str]:
        """Claude Code's families (opus, sonnet, haiku) -> the entry whose alias takes them."""
        out = {}
        for family, sample in CLAUDE_FAMILIES.items():
            for entry in self.models.values():
                if any(fnmatchcase(sample, a) for a in entry.aliases):
                    out[family] = entry.name
                    break
        return out
