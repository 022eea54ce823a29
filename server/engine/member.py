"""One request decoding in the batch (or alone beside it): its tokens in, its events out
(generation thread only)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from server.decoding.reply_parser import ReplyParser
from server.engine.job import Generation, Job
from server.engine.solo_decode import SoloDecode


@dataclass
class Member:
    job: Job
    uid: int  # its key in the batch (solo_decode.SOLO_UID while it decodes alone)
    run: Generation
    parser: ReplyParser
    detokenizer: Any
    estimate: int  # admitted KV bytes
    solo: SoloDecode | None = None  # decoding alone, outside the BatchGenerator

    def take(self, token: int, finish_reason: str | None) -> str | None:
        """Record one sampled token and emit what it completes; the reason the reply ends with
        it (a stop sequence, the end-of-turn token, the length), else None."""
        run = self.run
        if run.first_token_at is None:
            run.first_token_at = time.perf_counter()
        run.generated.append(token)
        if self.job.request.token_marks:  # ahead of its events: the front door resumes by it
            self.job.sampled.append(token)
        if finish_reason == "stop":
            self.detokenizer.finalize()  # the end-of-turn token itself is not text
        else:
            self.detokenizer.add_token(token)
            if finish_reason:
                self.detokenizer.finalize()
        for event in self.parser.feed(self.detokenizer.last_segment):
            self.job.emit(event)
        if self.parser.stopped:
            return "stop_sequence"
        return finish_reason

    def held_kv(self, kv_per_token: int) -> int:
        """KV bytes it holds now: its prompt and what it generated so far."""
        return kv_per_token * (len(self.job.rendered.tokens) + len(self.run.generated))
