"""The environment `mlxctl claude` gives Claude Code, derived from what the worker reports.

Names checked against Claude Code 2.1.337 (read from its own binary): it raises
CLAUDE_CODE_AUTO_COMPACT_WINDOW below 100K to 100K, warning on every run (so we send the floor),
clamps CLAUDE_STREAM_IDLE_TIMEOUT_MS to at least 300 s, compacts at
min(window * CLAUDE_AUTOCOMPACT_PCT_OVERRIDE %, window - 13K), and
CLAUDE_CODE_ATTRIBUTION_HEADER=0 drops the billing header. A smaller model needs the percentage
and the blocking limit too, or Claude Code sends prompts the worker must refuse.
ANTHROPIC_DEFAULT_FABLE_MODEL is one more alias (opus, sonnet, haiku, fable).
CLAUDE_CODE_SUBAGENT_MODEL_FORCE (a boolean) makes every subagent use CLAUDE_CODE_SUBAGENT_MODEL,
ignoring an agent definition's or a call's own model. CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS (an
integer, at least 1, default 20) caps subagents running at once; we set the worker's batch slots.
Claude Code applies its settings files' `env` over the environment it was started with, so a
value there wins over ours by itself; in the environment, the user's own values win here.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CLIENT_ENV = "MLXCTL_CLAUDE"  # the `claude` binary to run, when not the one on PATH
MIN_COMPACT_WINDOW = 100_000  # Claude Code's floor for CLAUDE_CODE_AUTO_COMPACT_WINDOW
COMPACT_RESERVE = 13_000  # Claude Code compacts no later than window - 13K
DEFAULT_OUTPUT_TOKENS = 32_000  # what Claude Code asks for unless told less
MIN_REQUEST_TIMEOUT_S = 600  # Claude Code's own defaults; never shorten them
MIN_STREAM_IDLE_S = 300
# Variables that would send Claude Code elsewhere or make it pick another key.
DROPPED = ("ANTHROPIC_API_KEY",)
MODEL_ALIASES = (
    "ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_FABLE_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL",
)  # fmt: skip
FAMILY_VARIABLES = {
    "opus": "ANTHROPIC_DEFAULT_OPUS_MODEL",
    "sonnet": "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "haiku": "ANTHROPIC_DEFAULT_HAIKU_MODEL",
}
# Where Claude Code sends requests and as what: a user's value here would skip the worker.
ROUTING = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", *MODEL_ALIASES)
INSTALL_HINT = (
    "install Claude Code: `npm install -g @anthropic-ai/claude-code` "
    f"(or point {CLIENT_ENV} at a `claude` binary)"
)


@dataclass
class Setting:
    name: str
    value: str
    why: str


def settings_for(
    report: dict,
    url: str,
    api_key: str | None,
    user: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
) -> list[Setting]:
    """What to set for a worker at `url` whose /v1/status is `report`; `user` (the caller's
    environment) keeps its own values of everything but ROUTING. `families` maps Claude Code's
    opus/sonnet/haiku to `[models.NAME]` entries whose aliases take them."""
    user = user or {}
    model = str(report.get("model") or "")
    out = [
        Setting("ANTHROPIC_BASE_URL", url, "the worker"),
        Setting("ANTHROPIC_AUTH_TOKEN", api_key or "local", "the worker's key" if api_key else
                "any value: the worker has no key"),
    ]  # fmt: skip
    if model:
        mapped = {FAMILY_VARIABLES[family] for family in families or {}}
        out += [Setting(name, model, "the loaded model") for name in MODEL_ALIASES
                if name not in mapped]  # fmt: skip
        if families:  # subagents name their own model, which the front door serves
            out += _families(families)
        else:
            out.append(Setting("CLAUDE_CODE_SUBAGENT_MODEL_FORCE", "1",
                               "subagents use the loaded model whatever they name"))  # fmt: skip
    context = report.get("context_length")
    if isinstance(context, int) and context > 0:
        out += _compaction(context, _tokens(user.get("CLAUDE_CODE_AUTO_COMPACT_WINDOW")))
    out += _output_limit(context, report.get("max_output_tokens"))
    out += _timeouts(context, (report.get("cache") or {}).get("prefill_tokens_per_second"))
    capacity = report.get("batch_capacity")
    slots = capacity if isinstance(capacity, int) and capacity > 0 else 1
    for name in ("CLAUDE_CODE_MAX_TOOL_USE_CONCURRENCY", "CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS"):
        out.append(Setting(name, str(slots), f"the worker generates {slots} request(s) at a time"))
    out.append(Setting("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1", "a local model"))
    out.append(Setting("CLAUDE_CODE_ATTRIBUTION_HEADER", "0", "keeps the prompt prefix stable"))
    return [_users_own(s, user) for s in out]


def _families(families: Mapping[str, str]) -> list[Setting]:
    """Claude Code's opus/sonnet/haiku aliases (and its small fast model) to the configured
    models whose aliases take them; a family no entry takes stays on the default model."""
    out = []
    for family, variable in FAMILY_VARIABLES.items():
        if family in families:
            out.append(Setting(variable, families[family], f"[models.{families[family]}]"))
    if "haiku" in families:
        out.append(Setting("ANTHROPIC_SMALL_FAST_MODEL", families["haiku"],
                           "background work on the haiku model"))  # fmt: skip
    return out


def _users_own(setting: Setting, user: Mapping[str, str]) -> Setting:
    """The user's own value, where they set one and it does not route requests elsewhere (a
    model name the front door serves by name is theirs to choose)."""
    mine = (user.get(setting.name) or "").strip()
    by_name = setting.why.startswith("[models.") or setting.name == "ANTHROPIC_SMALL_FAST_MODEL"
    if not mine or (setting.name in ROUTING and not by_name):
        return setting
    return Setting(setting.name, mine, "yours, from your environment")


def _tokens(value: str | None) -> int | None:
    """A token count as Claude Code reads one ("200000" or "200k"); None when it is neither."""
    text = (value or "").strip().lower()
    scale = 1000 if text.endswith("k") else 1
    digits = text[:-1] if scale > 1 else text
    return int(digits) * scale if digits.isdigit() else None


def _compact_at(context: int) -> int:
    # Claude Code's own prompt is ~20-27K tokens: a small context cannot spare a quarter.
    return context - min(COMPACT_RESERVE, context // 8)


def _compaction(context: int, users_window: int | None = None) -> list[Setting]:
    """Compact before the prompt reaches the context (the worker refuses a longer one)."""
    compact_at = _compact_at(context)
    window = max(context, MIN_COMPACT_WINDOW)
    # The percentage applies to the window in force: the user's own, when they set one.
    pct_of = max(users_window or window, MIN_COMPACT_WINDOW)
    pct = min(100.0, math.floor(1000 * compact_at / pct_of) / 10)
    why = "the model's context length" if window == context else "Claude Code's smallest window"
    out = [
        Setting("CLAUDE_CODE_AUTO_COMPACT_WINDOW", str(window), why),
        Setting("CLAUDE_AUTOCOMPACT_PCT_OVERRIDE", f"{pct:g}", f"compact at {compact_at:,} tokens"),
    ]
    if context < MIN_COMPACT_WINDOW:
        out.append(Setting("CLAUDE_CODE_BLOCKING_LIMIT_OVERRIDE", str(context - 1000),
                           "stop before the worker would refuse the prompt"))  # fmt: skip
    return out


def _output_limit(context: object, worker_cap: object) -> list[Setting]:
    """Claude Code asks for 32K output tokens; on a small context that cannot fit the prompt."""
    limits = []
    if isinstance(context, int) and 0 < context < MIN_COMPACT_WINDOW:
        limits.append((context - _compact_at(context), "what the context leaves at compaction"))
    if isinstance(worker_cap, int) and worker_cap > 0:
        limits.append((worker_cap, "the worker's --max-output-tokens"))
    if not limits:
        return []
    value, why = min(limits)
    if value >= DEFAULT_OUTPUT_TOKENS:
        return []
    return [Setting("CLAUDE_CODE_MAX_OUTPUT_TOKENS", str(value), why)]


def _timeouts(context: object, prefill_tps: object) -> list[Setting]:
    """Long enough for a cold prefill of the whole context, so it is not cancelled and retried."""
    request_s, idle_s = MIN_REQUEST_TIMEOUT_S, MIN_STREAM_IDLE_S
    why = "prefill speed not measured yet: Claude Code's defaults"
    if isinstance(context, int) and isinstance(prefill_tps, int | float) and prefill_tps > 0:
        full = context / prefill_tps
        request_s = max(request_s, math.ceil(2 * full + 120))
        idle_s = max(idle_s, math.ceil(1.5 * full))
        why = f"a cold {context:,}-token prefill takes ~{full:,.0f} s at {prefill_tps:,.0f} tok/s"
    return [
        Setting("API_TIMEOUT_MS", str(request_s * 1000), why),
        Setting("CLAUDE_STREAM_IDLE_TIMEOUT_MS", str(idle_s * 1000), why),
    ]


def environment(settings: list[Setting], base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (this process's environment) with the settings applied and DROPPED removed."""
    env = dict(os.environ if base is None else base)
    for name in DROPPED:
        env.pop(name, None)
    env.update({s.name: s.value for s in settings})
    return env


def export_lines(settings: list[Setting]) -> list[str]:
    """Shell lines that set the same environment (`eval "$(mlxctl claude --print-env)"`)."""
    return [f"unset {name}" for name in DROPPED] + [
        f"export {s.name}={shlex.quote(s.value)}" for s in settings
    ]


def find_client() -> str | None:
    """The `claude` binary: $MLXCTL_CLAUDE, else the one on PATH."""
    given = os.environ.get(CLIENT_ENV)
    if given:
        return given if Path(given).is_file() else shutil.which(given)
    return shutil.which("claude")
