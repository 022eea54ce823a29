"""The prompt's text as the model writes it back, for copy drafts.

Copy drafts continue the longest match of the reply in the prompt; three things the model does
while copying break that match at every line:
- Claude Code's `Read` shows a file with a line number and a tab before each line (`12\tcode`),
  which an `Edit`'s old_string or a `Write`'s content leaves out;
- a template whose tool calls are JSON (Hermes `<tool_call>`, Mistral, Kimi K2) has the model
  write the file as an escaped string: each newline `\\n`, each quote `\\"`.
- Codex edits with `apply_patch`, whose kept and removed lines carry a ` ` or `-` first.
So each piece of the prompt between added tokens that any of these changes is also given as the
model would write it (line numbers off; lines marked as a patch's where it patches; JSON-escaped
where calls are JSON), tokenized once (the segment encoder remembers pieces across turns).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict

from server.prompt.segments import SegmentEncoder

# mlx-lm's tool parsers whose calls carry their arguments as a JSON object.
JSON_CALL_PARSERS = frozenset({"json_tools", "mistral", "kimi_k2"})
MIN_CHARS = 64  # a shorter piece holds too little to copy
MIN_NUMBERED = 3  # lines with a line number before a piece counts as a numbered file
MAX_CHARS = 4 << 20  # memo bound: total characters of the pieces remembered
PATCH_MARKS = (" ", "-")  # a patch's kept and removed lines (added ones are new text)
PATCH_TOOL = "apply_patch"  # Codex's: a request with it may write patches
_ESCAPED = re.compile(r'[\n"\\\t]')
# `Read`'s line numbers: `12\t` (`   12→` in older Claude Code); an empty line is the bare number.
_NUMBER = re.compile(r"^ *\d+(?:\t|\u2192|$)", re.MULTILINE)


def writes_json_calls(tokenizer: object) -> bool:
    """Whether the model's tool calls are JSON (mlx-lm's parser for its template)."""
    module = getattr(getattr(tokenizer, "tool_parser", None), "__module__", "") or ""
    return module.rsplit(".", 1)[-1] in JSON_CALL_PARSERS


def without_line_numbers(piece: str) -> str | None:
    """`piece` with `Read`'s line numbers taken off (None: it shows no numbered file)."""
    numbered = len(_NUMBER.findall(piece))
    if numbered < MIN_NUMBERED or 2 * numbered < piece.count("\n") + 1:
        return None
    return _NUMBER.sub("", piece)


class CopyViews:
    """A prompt's pieces as the model writes them back, each piece's worked out once (thread-safe:
    requests render on a pool)."""

    def __init__(self, encoder: SegmentEncoder, json_calls: bool):
        """`json_calls`: the model's tool calls are JSON (`writes_json_calls`)."""
        self.encoder, self.json_calls = encoder, json_calls
        self._memo: OrderedDict[tuple[str, bool, bool], list[list[int]]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def __call__(self, text: str, tools: bool, patches: bool = False) -> list[list[int]]:
        """The ids of each piece of `text` as the model writes it back, where that differs: line
        numbers off; where a tool call (`tools`) is JSON, escaped as a JSON string's contents
        are (non-ASCII kept as it is, as models write it); where it edits with patches
        (`patches`: Codex's `apply_patch`), each line marked as a patch's kept and removed lines
        are (` `, `-`), which lead so the unmarked win a tie."""
        escape = tools and self.json_calls
        out: list[list[int]] = []
        for piece in self.encoder.split(text):
            if len(piece) >= MIN_CHARS:
                out += self._piece(piece, escape, patches)
        return out

    def _piece(self, piece: str, escape: bool, patches: bool) -> list[list[int]]:
        key = (piece, escape, patches)
        with self._lock:
            views = self._memo.get(key)
            if views is not None:
                self._memo.move_to_end(key)
                return views
        bare = without_line_numbers(piece)
        text = piece if bare is None else bare
        marked = [_marked(text, mark) for mark in PATCH_MARKS] if _lines(text) and patches else []
        escaped = [f for f in (piece, bare) if f is not None and _ESCAPED.search(f)]
        if escape:  # a patch is a JSON string too
            marked, escaped = [_escaped(f) for f in marked], [_escaped(f) for f in escaped]
        else:
            escaped = []
        forms = [*marked, *([bare] if bare is not None else []), *escaped]
        views = [self.encoder.remembered(form) for form in forms]
        with self._lock:
            if key not in self._memo:
                self._memo[key] = views
                self._chars += len(piece)
                while self._chars > MAX_CHARS:
                    (old, _, _), _ = self._memo.popitem(last=False)
                    self._chars -= len(old)
        return views


def _escaped(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _lines(text: str) -> bool:
    """Whether `text` holds lines enough to be a file a patch quotes."""
    return text.count("\n") + 1 >= MIN_NUMBERED


def _marked(text: str, mark: str) -> str:
    """Every line of `text` with `mark` before it, as a patch quotes the lines it keeps or
    removes."""
    return mark + text.replace("\n", "\n" + mark)
