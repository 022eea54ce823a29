"""The batch's membership (generation thread only): who decodes, and how a sequence moves.

A prefilled prompt decodes alone while nothing else does (`solo_decode`). When another joins, the
lone one moves into mlx-lm's BatchGenerator on the same state. A member whose reply ends where
mlx-lm cannot see it (a stop sequence, a cancel, a lone one's drafting) is taken back out with
its KV state, for the end store.
"""

from __future__ import annotations

from typing import Any

from server.engine.member import Member
from server.engine.solo_decode import SOLO_UID, SoloDecode


def lone(active: dict[int, Member]) -> tuple[Member, SoloDecode] | None:
    """The sequence decoding alone and its decode (None: the batch decodes, or nothing)."""
    seq = active.get(SOLO_UID)
    return (seq, seq.solo) if seq is not None and seq.solo is not None else None


def decode_step(gen: Any, active: dict[int, Member], others_waiting: bool) -> tuple[list, int]:
    """One decode step of the lone sequence, or else of the batch: its responses, and how many
    sequences it stepped."""
    alone = lone(active)
    if alone is None:
        responses = gen.next()[1]
        return responses, len(responses)
    alone[1].others_waiting = others_waiting
    return alone[1].next(), 1


def deliver(gen: Any, seq: Member, response: Any) -> bool:
    """Deliver one token; True when it ended the reply: the member then leaves with its KV
    state where the end store needs it, for the scheduler to finish."""
    run = seq.run
    reason = seq.take(response.token, response.finish_reason)
    if reason is None:
        return False
    run.reason = reason
    # mlx-lm does not know a stop sequence ended it; a lone one's drafting ends too.
    if reason == "stop_sequence" or seq.solo is not None:
        take_back(gen, seq)
    else:
        run.prompt_cache = response.prompt_cache
    return True


def into_batch(gen: Any, active: dict[int, Member], seq: Member, solo: SoloDecode) -> bool:
    """The lone sequence moves into the batch: the token it sampled ahead is delivered, and
    the batch feeds it next on the same state. True when that token ended its reply (it then
    stays out, for the scheduler to finish)."""
    response, joining = solo.handover()
    del active[SOLO_UID]
    if deliver(gen, seq, response):
        return True
    (uid,) = gen.insert(**joining)
    seq.uid, seq.solo, seq.run.prompt_cache = uid, None, None  # the batch holds the state
    active[uid] = seq
    return False


def take_back(gen: Any, seq: Member) -> None:
    """Take a member out of the batch before it finishes there, with its KV state where
    the end store needs it (the prefill's checkpoints hold it otherwise)."""
    run = seq.run
    if seq.solo is not None:  # a verify it had queued is undone
        run.prompt_cache = seq.solo.close()
        return
    final = gen.remove([seq.uid], return_prompt_caches=not run.checkpointed)
    run.prompt_cache = final.get(seq.uid, (None,))[0]


def disband(active: dict[int, Member]) -> list[int]:
    """Every member leaves at once (a failed step): the batch's uids, for mlx-lm to drop."""
    uids = [uid for uid in active if uid != SOLO_UID]
    if (alone := lone(active)) is not None and alone[1].drafting is not None:
        alone[1].drafting.close()  # a draft cache whole after the failure is kept
    active.clear()
    return uids
