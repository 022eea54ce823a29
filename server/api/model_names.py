"""Which model names a request may use: the loaded model's names, and any `claude-*` alias."""

from __future__ import annotations

from pathlib import PurePath

from server.errors import NotFound
from server.settings import Settings

# Ids a model picker (Claude Code's /model, OpenAI clients) keeps; any claude-* is accepted.
CLAUDE_ALIASES = ("claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")


def display_name(settings: Settings) -> str:
    """The model's name: `--model-name`, else `--model`; a local path shows its folder name."""
    given = settings.model_name or settings.model
    # A local path becomes its folder name; a hub id (org/name) stays as it is.
    local = PurePath(given).is_absolute() or given.startswith((".", "~"))
    return PurePath(given).name if local else given


def served_names(settings: Settings) -> list[str]:
    names = [display_name(settings), settings.model, settings.model_path]
    names.append(PurePath(settings.model_path).name)
    return list(dict.fromkeys(n for n in names if n))


def listed_names(settings: Settings) -> list[str]:
    """What /v1/models lists: the model's name and the Claude aliases, never a local path."""
    return [display_name(settings), *CLAUDE_ALIASES]


def check_model(settings: Settings, name: str) -> None:
    # Claude Code asks for claude-* models (several per session); all of them mean the loaded one.
    if name.startswith("claude-") or name in served_names(settings):
        return
    raise NotFound(
        f"model {name!r} is not served here; this worker serves {display_name(settings)!r}",
        param="model",
        code="model_not_found",
    )
