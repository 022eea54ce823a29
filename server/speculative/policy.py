"""How many drafts to verify each step, so drafting is never slower than plain decoding.

A verify step of k drafts gives 1 + a + a^2 + ... + a^k tokens on average (a: the chance the next
draft is right) and costs what a forward of 1 + k tokens costs at this context length, measured on
the running model as whole decode cycles (forward, sampling, rollback and the replies' handling).
k maximises tokens per second; 0 (plain decoding) unless some k beats it by a margin. Leaving
plain decoding's one-step-ahead pipeline and coming back costs cycles of their own (measured too),
so a step that starts drafting from plain decoding must pay for them as well. A draft
model's k forwards are part of the measured cycle; before a size is measured, the prior counts
them at the draft's weight bytes over the target's (decoding is bound by reading the weights).
"""

from __future__ import annotations

CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16)  # draft lengths tried (each is measured once used)
MARGIN = 1.05  # a k must promise this much over plain before a step drafts
PRIOR_SLOPE = 0.03  # an unmeasured size is assumed this much dearer per token: it gets tried
SWITCH = 0  # the size a switch cycle is recorded under (it feeds no size of its own)
PRIOR_SWITCH = 0.25  # a switch out of plain decoding or back, over a plain cycle, until measured
_EMA = 0.2
_OUTLIER = 4.0  # a cycle this much slower than usual had other work in it (a prefill turn)


def _bucket(context: int) -> int:
    return context.bit_length()  # costs change with the context length: powers of two apart


class CostModel:
    """Seconds per decode cycle by tokens fed (1: plain, 0: a switch) and context length; one per
    worker."""

    def __init__(self, draft_cost: float = 0.0) -> None:
        """`draft_cost`: one draft forward over one plain cycle, assumed until measured."""
        self.seconds: dict[tuple[int, int], float] = {}
        self.samples: dict[tuple[int, int], int] = {}
        self._first: dict[tuple[int, int], float] = {}  # a key's first cycle, until its second
        self.draft_cost = draft_cost

    def record(self, fed: int, context: int, seconds: float) -> None:
        key = (fed, _bucket(context))
        seen = self.samples[key] = self.samples.get(key, 0) + 1
        if seen == 1:
            # A shape's first cycle may hold one-time work (MLX CUDA compiles kernels: seconds),
            # and a size priced by it would never be chosen again to be measured: it waits.
            self._first[key] = seconds
            return
        old = self.seconds.get(key)
        if old is None:
            self.seconds[key] = min(self._first.pop(key), seconds)
        elif seconds <= _OUTLIER * old:
            self.seconds[key] = old + _EMA * (seconds - old)

    def switch(self, context: int) -> float:
        """What one switch costs beyond a plain cycle, in plain cycles."""
        bucket = _bucket(context)
        plain, seconds = self.seconds.get((1, bucket)), self.seconds.get((SWITCH, bucket))
        if not plain or seconds is None:
            return PRIOR_SWITCH
        return max(0.0, seconds / plain - 1.0)

    def first_seen(self, fed: int, context: int) -> bool:
        """Whether the one cycle measured of this size here is its first (a compile's, maybe)."""
        return self.samples.get((fed, _bucket(context)), 0) <= 1

    def ratio(self, fed: int, context: int) -> float:
        """A cycle feeding `fed` tokens over a plain one's cycle, here. Feeding more never costs
        less, so a larger size's measure bounds a smaller one (a cycle that caught other work
        cannot keep a size untried); past the largest measured, the prior's slope goes on."""
        bucket = _bucket(context)
        plain = self.seconds.get((1, bucket))
        if not plain:
            return 1.0 + (PRIOR_SLOPE + self.draft_cost) * (fed - 1)
        sizes = {f: s / plain for (f, b), s in self.seconds.items() if b == bucket and f != SWITCH}
        above = [r for f, r in sizes.items() if f >= fed]
        if above:
            return min(above)
        largest = max(sizes)
        more = fed - largest
        return sizes[largest] * (1.0 + PRIOR_SLOPE * more) + self.draft_cost * more

    def known(self) -> dict[str, float]:
        """Measured ratios at the longest context with a plain cycle measured (for /v1/status,
        from any thread; `copy` may draft on past the last plain cycle's context length)."""
        seconds = dict(self.seconds)  # one C-level copy: the generation thread adds keys
        plains = [b for fed, b in seconds if fed == 1]
        if not plains:
            return {}
        bucket = max(plains)
        plain = seconds.get((1, bucket))
        return {
            str(fed): round(s / plain, 3)
            for (fed, b), s in sorted(seconds.items())
            if b == bucket and plain and fed != SWITCH
        }


class Acceptance:
    """The chance the next draft token is right, over a request's recent drafts (a decayed
    count with a prior of one half, so a turn that stops copying is noticed within steps)."""

    def __init__(self, prior: float = 0.5, weight: float = 2.0, decay: float = 0.9):
        self.right, self.tried = prior * weight, weight
        self.decay = decay

    def observe(self, right: int, tried: int) -> None:
        self.right = self.right * self.decay + right
        self.tried = self.tried * self.decay + tried

    @property
    def rate(self) -> float:
        return min(self.right / self.tried, 0.999)


def expected_tokens(rate: float, k: int) -> float:
    """Tokens one verify of `k` drafts gives on average (the model's own token counts)."""
    return sum(rate**i for i in range(k + 1))


def choose(rate: float, costs: CostModel, context: int, limit: int, entering: bool = False) -> int:
    """The draft length that gives the most tokens per second; 0 when none beats plain.
    `entering`: the step would leave plain decoding, so it pays the way out and back too."""
    best, best_gain = 0, MARGIN
    switches = 2 * costs.switch(context) if entering else 0.0
    for k in CANDIDATES:
        if k > limit:
            break
        gain = expected_tokens(rate, k) / (costs.ratio(k + 1, context) + switches)
        if gain > best_gain:
            best, best_gain = k, gain
    return best
