"""The `-c key=value` overrides `mlxctl codex` gives OpenAI's Codex CLI, from the worker's report.

Overrides on the command line rather than a private CODEX_HOME: Codex keeps its auth, history,
sessions, skills and the user's config.toml where they are, and nothing is written or linked.
Keys checked against Codex 0.171.0 (its config schema, read from the binary): a custom provider
under `model_providers` (`base_url`, `wire_api`, `env_key`, `stream_idle_timeout_ms`),
`model_context_window` and `model_auto_compact_token_limit`. Codex 0.171 has no output-limit key
and sends no `max_output_tokens`: the worker's own cap applies. `-c` beats config.toml, so a
computed value the user set themselves (in config.toml, their profile or their own `-c`) is left
out; the routing keys are always ours, in the active profile too, where a profile's value would
beat a top-level override.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLIENT_ENV = "MLXCTL_CODEX"  # the `codex` binary to run, when not the one on PATH
KEY_ENV = "MLXCTL_CODEX_API_KEY"  # the provider's env_key: Codex reads the worker's key from it
PROVIDER = "mlxctl"
COMPACT_RESERVE = 13_000  # room for the reply and Codex's own summary turn
MIN_STREAM_IDLE_S = 300  # Codex's own default; never shorten it
INSTALL_HINT = (
    f"install Codex: `npm install -g @openai/codex` (or point {CLIENT_ENV} at a `codex` binary)"
)


@dataclass
class Override:
    key: str  # a dotted Codex config key
    value: str | int | bool
    why: str

    def toml(self) -> str:
        """The value as TOML writes it (Codex parses each `-c` value as TOML)."""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return str(self.value) if isinstance(self.value, int) else json.dumps(self.value)

    def arg(self) -> str:
        return f"{self.key}={self.toml()}"


def routing(report: dict, url: str, api_key: str | None) -> list[Override]:
    """Where Codex sends requests and as what: always the worker's."""
    provider = f"model_providers.{PROVIDER}"
    out = [
        Override("model_provider", PROVIDER, "the worker, as a custom provider"),
        Override(f"{provider}.name", PROVIDER, "the provider's display name"),
        Override(f"{provider}.base_url", url.rstrip("/") + "/v1", "the worker"),
        Override(f"{provider}.wire_api", "responses", "the API Codex speaks"),
        Override(f"{provider}.env_key", KEY_ENV,
                 "the worker's key" if api_key else "any value: the worker has no key"),
    ]  # fmt: skip
    model = str(report.get("model") or "")
    if model:
        out.insert(1, Override("model", model, "the served model's name"))
    return out


def tuning(report: dict) -> list[Override]:
    """What follows from the worker's context and measured prefill speed."""
    out = []
    context = report.get("context_length")
    if isinstance(context, int) and context > 0:
        compact_at = context - min(COMPACT_RESERVE, context // 8)
        out += [
            Override("model_context_window", context, "the model's context length"),
            Override("model_auto_compact_token_limit", compact_at,
                     "compact before the worker would refuse the prompt"),
        ]  # fmt: skip
    idle_s, why = MIN_STREAM_IDLE_S, "prefill speed not measured yet: Codex's default"
    prefill_tps = (report.get("cache") or {}).get("prefill_tokens_per_second")
    if isinstance(context, int) and isinstance(prefill_tps, int | float) and prefill_tps > 0:
        full = context / prefill_tps
        idle_s = max(idle_s, math.ceil(1.5 * full))
        why = f"a cold {context:,}-token prefill takes ~{full:,.0f} s at {prefill_tps:,.0f} tok/s"
    out.append(Override(f"model_providers.{PROVIDER}.stream_idle_timeout_ms", idle_s * 1000, why))
    return out


def overrides_for(
    report: dict,
    url: str,
    api_key: str | None,
    user_config: Mapping | None = None,
    args: Sequence[str] = (),
) -> list[Override]:
    """The overrides for a worker at `url` whose /v1/status is `report`; the user's own values
    (config.toml `user_config`, its active profile, `-c` in `args`) keep everything but routing."""
    config = dict(user_config or {})
    profile = active_profile(config, args)
    mine = users_keys(config, args)
    out = routing(report, url, api_key)
    if profile:  # a profile's own value beats a top-level override
        out += [
            Override(f"profiles.{profile}.{o.key}", o.value, f"{o.why} (your profile {profile})")
            for o in out
            if o.key in ("model", "model_provider")
        ]
    return out + [o for o in tuning(report) if o.key not in mine]


def left_to_user(report: dict, user_config: Mapping | None, args: Sequence[str]) -> list[str]:
    """The computed keys the user set themselves, so theirs are kept."""
    mine = users_keys(dict(user_config or {}), args)
    return [o.key for o in tuning(report) if o.key in mine]


def users_keys(config: Mapping, args: Sequence[str]) -> set[str]:
    """Every key the user set: config.toml, its active profile, their own `-c` arguments."""
    mine = set(_keys(config)) | set(_arg_keys(args))
    profile = active_profile(config, args)
    if profile:
        mine |= set(_keys(config.get("profiles", {}).get(profile, {})))
    return mine


def active_profile(config: Mapping, args: Sequence[str]) -> str | None:
    """`--profile NAME` / `-p NAME` among the args, else config.toml's `profile`."""
    for i, arg in enumerate(args):
        if arg in ("-p", "--profile") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--profile="):
            return arg.split("=", 1)[1]
    value = config.get("profile")
    return value if isinstance(value, str) and value else None


def _keys(table: Mapping, prefix: str = "") -> list[str]:
    """Every dotted key a TOML table sets (`a.b.c` for nested tables)."""
    out = []
    for name, value in table.items():
        key = f"{prefix}{name}"
        out += _keys(value, key + ".") if isinstance(value, Mapping) else [key]
    return out


def _arg_keys(args: Sequence[str]) -> list[str]:
    """The keys of the user's own `-c key=value` / `--config key=value` arguments."""
    out = []
    for i, arg in enumerate(args):
        value = None
        if arg in ("-c", "--config") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value and "=" in value:
            out.append(value.split("=", 1)[0].strip())
    return out


def codex_home(env: Mapping[str, str]) -> Path:
    """Where Codex keeps its config: $CODEX_HOME, else ~/.codex."""
    given = env.get("CODEX_HOME")
    return Path(given) if given else Path(env.get("HOME") or Path.home()) / ".codex"


def read_user_config(env: Mapping[str, str]) -> dict:
    """The user's own config.toml; empty when there is none or it does not parse (Codex will
    say why itself when it starts)."""
    try:
        return tomllib.loads((codex_home(env) / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


def argv(client: str, overrides: list[Override], args: Sequence[str]) -> list[str]:
    """`codex -c k=v ... ARGS`: the overrides first, so the user's own `-c` come after them."""
    flags = [part for o in overrides for part in ("-c", o.arg())]
    return [client, *flags, *args]


def environment(api_key: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (this process's environment) with the key Codex sends to the worker."""
    env = dict(os.environ if base is None else base)
    env[KEY_ENV] = api_key or "local"
    return env


def find_client() -> str | None:
    """The `codex` binary: $MLXCTL_CODEX, else the one on PATH."""
    given = os.environ.get(CLIENT_ENV)
    if given:
        return given if Path(given).is_file() else shutil.which(given)
    return shutil.which("codex")
