"""Which model names a request may use: the loaded model's names, and any `claude-*` alias."""

from __future__ import annotations

from pathlib import PurePath

from server.errors import NotFound
from server.settings import Settings


def served_names(settings: Settings) -> list[str]:
    names = [settings.model, settings.model_path, PurePath(settings.model_path).name]
    return list(dict.fromkeys(n for n in names if n))


def check_model(settings: Settings, name: str) -> None:
    # Claude Code asks for claude-* models (several per session); all of them mean the loaded one.
    if name.startswith("claude-") or name in served_names(settings):
        return
    raise NotFound(
        f"model {name!r} is not served here; this worker serves {settings.model!r}",
        param="model",
        code="model_not_found",
    )
