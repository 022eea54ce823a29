"""The environment `mlxctl claude` gives Claude Code, derived from what the worker reports.

Names checked against Claude Code 2.1.197 (read from its own binary): it clamps
CLAUDE_CODE_AUTO_COMPACT_WINDOW to at least 100K tokens and CLAUDE_STREAM_IDLE_TIMEOUT_MS to at
least 300 s, compacts at min(window * CLAUDE_AUTOCOMPACT_PCT_OVERRIDE %, window - 13K), and
CLAUDE_CODE_ATTRIBUTION_HEADER=0 drops the billing header. A smaller model needs the percentage
and the blocking limit too, or Claude Code sends prompts the worker must refuse.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
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
INSTALL_HINT = (
    "install Claude Code: `npm install -g @anthropic-ai/claude-code` "
    f"(or point {CLIENT_ENV} at a `claude` binary)"
)


@dataclass
class Setting:
    name: str
    value: str
    why: str


def settings_for(report: dict, url: str, api_key: str | None) -> list[Setting]:
    """What to set for a worker at `url` whose /v1/status is `report`."""
    model = str(report.get("model") or "")
    out = [
        Setting("ANTHROPIC_BASE_URL", url, "the worker"),
        Setting("ANTHROPIC_AUTH_TOKEN", api_key or "local", "the worker's key" if api_key else
                "any value: the worker has no key"),
    ]  # fmt: skip
    if model:
        for name in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL",
                     "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                     "CLAUDE_CODE_SUBAGENT_MODEL"):  # fmt: skip
            out.append(Setting(name, model, "the loaded model"))
    context = report.get("context_length")
    if isinstance(context, int) and context > 0:
        out += _compaction(context)
    out += _output_limit(context, report.get("max_output_tokens"))
    out += _timeouts(context, (report.get("cache") or {}).get("prefill_tokens_per_second"))
    capacity = report.get("batch_capacity")
    slots = capacity if isinstance(capacity, int) and capacity > 0 else 1
    out.append(Setting("CLAUDE_CODE_MAX_TOOL_USE_CONCURRENCY", str(slots),
                       f"the worker generates {slots} request(s) at a time"))  # fmt: skip
    out.append(Setting("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1", "a local model"))
    out.append(Setting("CLAUDE_CODE_ATTRIBUTION_HEADER", "0", "keeps the prompt prefix stable"))
    return out


def _compact_at(context: int) -> int:
    # Claude Code's own prompt is ~20-27K tokens: a small context cannot spare a quarter.
    return context - min(COMPACT_RESERVE, context // 8)


def _compaction(context: int) -> list[Setting]:
    """Compact before the prompt reaches the context (the worker refuses a longer one)."""
    compact_at = _compact_at(context)
    window = max(context, MIN_COMPACT_WINDOW)
    pct = math.floor(1000 * compact_at / window) / 10
    out = [
        Setting("CLAUDE_CODE_AUTO_COMPACT_WINDOW", str(context), "the model's context length"),
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
