"""The check behind "never slower": seconds per token measured while drafting (its switches in
and out of the one-step-ahead pipeline included) against steady plain decoding, per context
length. The cost model predicts; this measures what came out, and stops `auto` drafting where it
came out slower, trying again now and then (a cycle that caught other work fades)."""

from __future__ import annotations

_DECAY = 0.97  # per cycle: the last few dozen cycles of each kind count
PROBE_EVERY = 64  # plain steps with a guess between two tries while drafting is held off
SLACK = 0.98  # drafting must come out at least this much faster per token than plain
OUTLIER = 4.0  # a cycle this much slower per token than the running mean counts at that bound


def _bucket(context: int) -> int:
    return context.bit_length()


class SpeedGuard:
    """One per worker; updated on the generation thread."""

    def __init__(self) -> None:
        self._spent: dict[tuple[bool, int], list[float]] = {}  # (drafting, bucket) -> [s, tokens]
        # Where a verify cycle's time goes, by part: its build, the wait for the device, the
        # positions, the rollback, proposing the next drafts, the scheduler's handling of the
        # tokens, and the whole cycle (the parts overlap the device where it runs ahead).
        self._parts: dict[str, list[float]] = {}  # part -> [times, seconds]

    def spent(self, part: str, seconds: float) -> None:
        acc = self._parts.setdefault(part, [0, 0.0])
        acc[0] += 1
        acc[1] += seconds

    def record(self, drafting: bool, context: int, tokens: int, seconds: float) -> None:
        acc = self._spent.setdefault((drafting, _bucket(context)), [0.0, 0.0])
        if acc[1] >= 8:  # one-time work (a kernel compiled on first use) must not hold for long
            seconds = min(seconds, OUTLIER * tokens * acc[0] / acc[1])
        plain = self.per_token(False, context)
        if drafting and plain is not None:  # nor one before drafting has a mean of its own
            seconds = min(seconds, OUTLIER * tokens * plain)
        acc[0] = acc[0] * _DECAY + seconds
        acc[1] = acc[1] * _DECAY + tokens

    def per_token(self, drafting: bool, context: int) -> float | None:
        acc = self._spent.get((drafting, _bucket(context)))
        return acc[0] / acc[1] if acc and acc[1] >= 8 else None

    def holds_off(self, context: int) -> bool:
        """Whether drafting came out slower than plain decoding here."""
        drafted, plain = self.per_token(True, context), self.per_token(False, context)
        return drafted is not None and plain is not None and drafted * SLACK > plain

    def status(self, context: int | None = None) -> dict:
        """Measured seconds per token at the longest context seen (for /v1/status)."""
        spent = dict(self._spent)
        if not spent:
            return {}
        bucket = max(b for _, b in spent) if context is None else _bucket(context)
        out = {}
        for drafting, name in ((False, "plain_ms_per_token"), (True, "drafting_ms_per_token")):
            acc = spent.get((drafting, bucket))
            if acc and acc[1]:
                out[name] = round(1000 * acc[0] / acc[1], 3)
        parts = dict(self._parts)  # the generation thread adds keys
        if "cycle" in parts:
            for part, (times, seconds) in parts.items():
                out[f"verify_{part}_ms"] = round(1000 * seconds / times, 3)
        return out
