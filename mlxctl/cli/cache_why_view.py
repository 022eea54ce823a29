"""`mlxctl cache why` as people read it: the cached prefix, where the prompt diverged, excerpts."""

from __future__ import annotations

import time

from rich.markup import escape

from mlxctl.cli.output import output


def _excerpt(text: str | None) -> str:
    # Newlines as ⏎ so an excerpt stays on one line; markup escaped (prompts hold [brackets]).
    return escape((text or "").replace("\n", "⏎")) if text else "[dim](nothing)[/]"


def show_why(report: dict) -> None:
    prompt, cached = report.get("prompt_tokens") or 0, report.get("cached_tokens") or 0
    at = report.get("time")
    when = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, int | float) else "-"
    share = f" ({min(100 * cached / prompt, 99):.0f}%)" if prompt else ""
    model = report.get("served_model")  # one of several models answered it
    on = f", {escape(model)}" if model else ""
    output.print(
        f"request [bold]{report.get('request_id')}[/] ({report.get('protocol')}{on}, {when}): "
        f"{prompt:,} prompt tokens, {cached:,} from the cache{share}",
        soft_wrap=True,
    )
    nearest = report.get("nearest")
    if nearest:
        output.print(
            f"nearest earlier request {nearest['request_id']} shares "
            f"{nearest['shared_tokens']:,} tokens with it"
        )
    else:
        output.print("no earlier request the worker keeps shares a prefix with it")
    where = report.get("diverged_at")
    if report.get("full_hit"):
        output.success("the whole prompt came from the cache (all but its last token)")
    elif where:
        first, last = where.get("segment_tokens") or (0, 0)
        output.print(
            f"diverged at token {where['token']:,}, in [bold]{escape(where['segment'])}[/] "
            f"(tokens {first:,}-{last:,}); {prompt - cached:,} tokens prefilled",
            soft_wrap=True,
        )
        output.print(f"  before   {_excerpt(where.get('before'))}", soft_wrap=True)
        output.print(f"  this     {_excerpt(where.get('after'))}", soft_wrap=True)
        if nearest:
            theirs = where.get("nearest_after")
            # Its prompt may end there: the cache also held its reply, which this one changed.
            shown = _excerpt(theirs) if theirs else "[dim](its prompt ended there)[/]"
            output.print(f"  earlier  {shown}", soft_wrap=True)
    for note in report.get("notes") or []:
        output.note(note)
