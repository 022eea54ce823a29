"""The mlxctl config: one TOML file under the home, edited with tomlkit so comments survive.

Every key has a type and a default in `SCHEMA` (config_schema.py); errors name the key path
and the expected type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomlkit

from mlxctl import paths
from mlxctl.config_schema import KEYS as KEYS  # read through this module too
from mlxctl.config_schema import SCHEMA as SCHEMA
from mlxctl.config_schema import Key
from mlxctl.errors import ConfigError
from mlxctl.models import served

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def config_path() -> Path:
    return paths.home() / "config.toml"


def _key(path: str) -> Key:
    if path not in KEYS:
        raise ConfigError(f"unknown config key {path!r}", hint=f"known keys: {', '.join(KEYS)}")
    return KEYS[path]


def _check(key: Key, value: Any) -> Any:
    """`value` as the key's type, or ConfigError naming the key path and the expected type."""
    ok = isinstance(value, key.type) and not (key.type is not bool and isinstance(value, bool))
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(
            f"config key {key.path!r} expects {_TYPE_NAMES[key.type]}, got {value!r}",
            hint=f"{key.path}: {key.help}",
        )
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(
            f"config key {key.path!r} must be at least {key.minimum:g}, got {value!r}",
            hint=f"{key.path}: {key.help}",
        )
    return value


def _check_path(path: str, value: Any) -> Any:
    return _check(_key(path), value)


def parse_value(path: str, text: str) -> Any:
    """Turn the text of `mlxctl config set KEY VALUE` into the key's type."""
    key = _key(path)
    try:
        if key.type is int:
            value: Any = int(text.replace("_", ""))
        elif key.type is float:
            value = float(text)
        elif key.type is bool:
            value = {"true": True, "false": False}[text.lower()]
        else:
            value = text
    except (ValueError, KeyError):
        raise ConfigError(
            f"config key {path!r} expects {_TYPE_NAMES[key.type]}, got {text!r}",
            hint=f"{path}: {key.help}",
        ) from None
    return _check(key, value)


def default_document() -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("mlxctl configuration; `mlxctl config set KEY VALUE` keeps comments."))
    tables: dict[str, Any] = {}
    for key in SCHEMA:
        if "." in key.path:
            table_name, name = key.path.split(".", 1)
            if table_name not in tables:
                tables[table_name] = tomlkit.table()
                doc.add(tomlkit.nl())
                doc.add(table_name, tables[table_name])
            container = tables[table_name]
        else:
            container, name = doc, key.path
        # An item, not the value: tomlkit hands a boolean back as a plain bool (no comments).
        item = tomlkit.item(key.default)
        item.comment(key.help)
        container.add(name, item)
    return doc


def load_document() -> tomlkit.TOMLDocument:
    path = config_path()
    if not path.exists():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text())
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix it: `mlxctl config edit`"
        ) from None


def _lookup(doc: Any, path: str) -> Any:
    node = doc
    for part in path.split("."):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def load() -> dict[str, Any]:
    """Every key's effective value (file over defaults), validated, by key path; "models" holds
    the `[models.NAME]` entries (served.ServedModel by name)."""
    doc = load_document()
    values = {}
    for key in SCHEMA:
        raw = _lookup(doc, key.path)
        values[key.path] = key.default if raw is None else _check(key, _plain(raw))
    values["models"] = served.parse_table(_plain(doc.get("models")), _check_path)
    for name, value in doc.items():
        if name == "models":
            continue  # [models.NAME] tables: checked above
        inner = [f"{name}.{sub}" for sub in value] if isinstance(value, dict) else [name]
        for path in inner:
            if path not in KEYS:
                raise ConfigError(
                    f"unknown config key {path!r} in {config_path()}",
                    hint=f"known keys: {', '.join(KEYS)}",
                )
    return values


def get(path: str) -> Any:
    _key(path)
    return load()[path]


def set_value(path: str, text: str) -> Any:
    """Set one key in the file, keeping the user's comments and order; returns the new value."""
    value = parse_value(path, text)
    load()  # refuse to write on top of a file that is already invalid
    doc = load_document()
    if not config_path().exists():
        doc = default_document()
    if "." in path:
        table_name, name = path.split(".", 1)
        if table_name not in doc:
            doc.add(table_name, tomlkit.table())
        doc[table_name][name] = value
    else:
        doc[path] = value
    write_document(doc)
    return value


def write_document(doc: tomlkit.TOMLDocument) -> None:
    from mlxctl.system.statefile import write_text

    paths.ensure_private_dir(config_path().parent)
    write_text(config_path(), tomlkit.dumps(doc))


def ensure_file() -> Path:
    """Create the file with every key, its default and a comment, when it does not exist."""
    path = config_path()
    if not path.exists():
        write_document(default_document())
    return path


def cache_options(values: dict[str, Any]) -> dict[str, Any]:
    """The worker's cache flags from loaded config `values` (see
    server.edge.contract.worker_argv)."""
    return {
        "cache_dir": paths.kv_cache_dir(),
        # -1: no flag, so the worker takes its own default (10% of this machine's RAM).
        "cache_ram_bytes": values["cache.ram_bytes"] if values["cache.ram_bytes"] >= 0 else None,
        "cache_disk_bytes": values["cache.disk_bytes"],
    }


BACKENDS = ("ring", "jaccl", "mpi", "nccl")
PARALLEL = ("tensor", "pipeline")


def distributed_options(values: dict[str, Any]) -> dict[str, Any]:
    """The worker's across-ranks flags (server.edge.contract.worker_argv), checked; {} for one."""
    backend, parallel = values["distributed.backend"], values["distributed.parallel"]
    if backend not in BACKENDS:
        raise ConfigError(
            f"distributed.backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
        )
    if parallel not in PARALLEL:
        raise ConfigError(
            f"distributed.parallel must be one of {', '.join(PARALLEL)}, got {parallel!r}"
        )
    hosts, hostfile = values["distributed.hosts"], values["distributed.hostfile"]
    if values["distributed.ranks"] <= 1 and not hosts and not hostfile:
        return {}
    return {
        "ranks": values["distributed.ranks"],
        "hosts": hosts or None,
        "hostfile": str(Path(hostfile).expanduser()) if hostfile else None,
        "backend": backend,
        "parallel": parallel,
    }


def worker_options(values: dict[str, Any]) -> dict[str, Any]:
    """Every worker flag the config sets (cache budgets and folder, stored responses' bounds,
    allowed hosts, batch sizes, tool parser, ranks)."""
    return {
        **cache_options(values),
        "responses_max_count": values["responses.max_count"],
        "responses_max_bytes": values["responses.max_bytes"],
        "allowed_hosts": values["allowed_hosts"] or None,
        "progress_timeout": values["restart.progress_timeout"],
        "decode_concurrency": values["batch.decode_concurrency"],
        "prompt_concurrency": values["batch.prompt_concurrency"],
        "turn_seconds": values["batch.turn_seconds"],
        "prefill_streams": values["batch.prefill_streams"] or None,
        "kv_budget_bytes": values["batch.kv_budget_bytes"] or None,
        **distributed_options(values),
        "tool_parser": values["tool_parser"] or None,
        "speculative": values["speculative"] or None,
        "draft_model": values["draft_model"] or None,
        "draft_cache_entries": values["draft_cache.entries"],
        "draft_cache_bytes": values["draft_cache.max_bytes"],
        **trace_options(values),
    }


def trace_options(values: dict[str, Any]) -> dict[str, Any]:
    """The worker's trace flags: its folder only when tracing is on, the bounds always (a
    live `mlxctl trace on` then records within them)."""
    return {
        "trace_dir": paths.traces_dir() if values["trace.enabled"] else None,
        "trace_max_bytes": values["trace.max_bytes"],
        "trace_max_files": values["trace.max_files"],
    }
