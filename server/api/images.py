"""Images and other media a model cannot read become a note in the prompt (a vision model
reads images; documents, audio and files it cannot).

Once a user pastes a screenshot, it stays in every later turn's history: refusing it would fail
the whole session. Each image becomes the note a tool result's image gets; one in the newest
turn is also said in the reply (a `Warning` header and a log line), since its turn loses it.
"""

from __future__ import annotations

PLACEHOLDER = "[{kind} omitted: this model reads {reads} only]"


# OpenAI's part types by what they hold (Anthropic's `image` and `document` say it already).
_MEDIA = {"image_url": "image", "input_image": "image", "input_audio": "audio", "file": "file"}
MEDIA_TYPES = ("image", "document", *_MEDIA)


def _reads(vision: bool) -> str:
    return "text and images" if vision else "text"


def placeholder(kind: str, vision: bool = False) -> str:
    """The prompt text standing where a `kind` block (or content part) was."""
    return PLACEHOLDER.format(kind=_MEDIA.get(kind, kind), reads=_reads(vision))


def dropped_note(where: str, kind: str, vision: bool = False) -> str:
    """What the reply says of a block the newest turn lost."""
    return f"{where}: {kind} dropped (this model reads {_reads(vision)} only)"


def warning_header(notes: list[str]) -> dict[str, str]:
    """RFC 9111's `Warning` (299: a persistent warning) naming what was dropped; {} if nothing."""
    if not notes:
        return {}
    text = "; ".join(notes).replace("\\", "\\\\").replace('"', '\\"')
    return {"warning": f'299 mlxctl "{text}"'}
