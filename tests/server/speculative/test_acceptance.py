"""The acceptance rule and the draft-length policy, on fakes: sampled decoding with drafts follows
the model's distribution; `auto` drafts where it pays and stops where drafts fail."""

from __future__ import annotations

import pytest

from server.speculative.policy import CostModel, choose, expected_tokens
from server.speculative.session import Drafting

PROBS = [0.5, 0.3, 0.15, 0.05]  # the model's distribution over a 4-token vocabulary


class FixedModel:
    """Every position's logits are log(PROBS), whatever was fed."""

    def __call__(self, inputs, cache=None):
        import mlx.core as mx

        logits = mx.log(mx.array(PROBS))
        return mx.broadcast_to(logits, (1, inputs.shape[1], len(PROBS)))


class Without:
    """A processor that forbids one token, position by position."""

    def __init__(self, token: int):
        self.token = token

    def __call__(self, tokens, logits):
        import mlx.core as mx

        return mx.where(mx.arange(logits.shape[-1]) == self.token, -mx.inf, logits)


class WithoutAtOnce(Without):
    """The same with the batch path: a verify's rows at once."""

    def process_many(self, fed, logits):
        return self(None, logits)

    def commit(self, kept):
        pass


@pytest.mark.parametrize("processor", [None, Without(2), WithoutAtOnce(2)])
@pytest.mark.parametrize("draft", [0, 3])  # the likeliest token, and a rare one
def test_sampled_tokens_after_a_draft_follow_the_models_distribution(draft, processor):
    # A draft is accepted with probability p(d); a rejection samples p without d. Together the
    # next token must be drawn from p (masked by the processor, if any). 6000 draws: 4 standard
    # errors at p=0.5 is 0.026.
    import mlx.core as mx
    from mlx_lm.models.cache import TokenBuffer
    from mlx_lm.sample_utils import make_sampler

    from server.speculative.verify import verify

    mx.random.seed(0)
    sampler = make_sampler(temp=1.0)
    probs = list(PROBS)
    if processor is not None:
        probs[processor.token] = 0.0
    probs = [p / sum(probs) for p in probs]
    counts = [0] * len(PROBS)
    n = 6000
    for _ in range(n):
        step = verify(
            FixedModel(),
            [],
            pending=1,
            drafts=[draft, draft],
            sampler=sampler,
            processors=[processor] if processor else [],
            context=TokenBuffer([1]) if processor else None,
            deliver=lambda token: False,
        )
        following = step.delivered[1] if step.accepted else step.pending
        counts[following] += 1
    for got, want in zip(counts, probs, strict=True):
        assert abs(got / n - want) < 0.03, (counts, probs)


class Ratios(CostModel):
    """A cost model with given ratios: a cycle of 1 + k tokens costs `slope` more per draft."""

    def __init__(self, slope: float):
        super().__init__()
        self.slope = slope

    def ratio(self, fed: int, context: int) -> float:
        return 1.0 + self.slope * (fed - 1)


def test_the_policy_drafts_only_where_the_expected_gain_beats_the_cost():
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert choose(0.9, Ratios(0.02), 1000, 64) == 16  # cheap verifies, good drafts: long
    assert choose(0.9, Ratios(0.02), 1000, 3) == 3  # never past the reply's room
    assert choose(0.6, Ratios(0.3), 1000, 64) in (1, 2)  # dear verifies (an MoE): short
    assert choose(0.1, Ratios(0.3), 1000, 64) == 0  # failing drafts: plain decoding


def test_auto_turns_drafting_off_when_drafts_keep_failing_and_on_when_they_match_again():
    drafting = Drafting("auto", [5, 6, 7, 8, 5, 6], Ratios(0.1))
    # Leaving plain decoding costs its switches: the prior alone does not pay for them, but
    # plain steps check the guesses at no cost, and a few right ones do.
    assert drafting.length(100, 64) == 0
    drafting.delivered([7, 8, 5, 6] * 3)
    assert drafting.length(100, 64) > 0
    for _ in range(20):
        drafting.verified([], 4)  # four drafts, the first already wrong
    assert drafting.length(100, 64) == 0
    # Plain steps still check the guesses, at no cost: copying resumes once they match.
    drafting.delivered([7, 8, 5, 6] * 10)
    assert drafting.length(100, 64) > 0
    copy = Drafting("copy", [1, 2], Ratios(0.1))
    for _ in range(10):
        copy.verified([], 4)
    assert copy.length(100, 64) == 16  # `copy` drafts whatever the acceptance


def test_starting_to_draft_pays_the_switches_and_drafting_on_does_not():
    costs = Ratios(0.1)
    for _ in range(2):  # a size's measure starts with its second cycle
        costs.record(1, 1000, 0.010)
        costs.record(0, 1000, 0.030)  # a switch cycle: 2 plain cycles more each way
    assert costs.switch(1000) == pytest.approx(2.0)
    assert costs.known() == {"1": 1.0}  # a switch is no size of its own
    drafting = Drafting("auto", [5, 6, 7, 8, 5, 6], costs)
    drafting.acceptance.observe(6, 10)  # a middling rate: drafting pays only once under way
    assert drafting.length(1000, 64) == 0  # from plain decoding: not worth the way out and back
    drafting.verified([7], 2)  # a verify just ran (the step drafts on from it)
    assert drafting.length(1000, 64) > 0
    drafting.delivered([8])  # plain again
    assert drafting.length(1000, 64) == 0


def test_the_cost_model_measures_ratios_and_a_larger_feed_bounds_a_smaller_one():
    costs = CostModel()
    assert costs.ratio(5, 1000) == pytest.approx(1.12)  # nothing measured: the prior
    for _ in range(2):  # a size's measure starts with its second cycle: the lesser of the two
        costs.record(1, 1000, 0.010)
        costs.record(5, 1000, 0.020)
        costs.record(3, 1000, 0.130)  # cycles that caught a prefill turn
    assert costs.ratio(5, 1000) == pytest.approx(2.0)
    assert costs.ratio(3, 1000) == pytest.approx(2.0)  # bounded by the larger feed's
    assert costs.ratio(9, 1000) > 2.0  # past the largest: dearer still
    costs.record(5, 1000, 0.900)  # an outlier is ignored
    assert costs.ratio(5, 1000) == pytest.approx(2.0)
    assert costs.ratio(5, 100_000) == pytest.approx(1.12)  # another context length: unmeasured
    costs.record(5, 5000, 0.030)  # drafting went on past the last plain cycle's context length
    costs.record(5, 5000, 0.030)
    assert costs.known()["5"] == pytest.approx(2.0)  # the longest context with a plain measure


def test_a_sizes_first_cycle_does_not_price_it_out_of_being_measured_again():
    """On MLX CUDA a verify size's first cycle compiles its kernels (seconds against a 12-35 ms
    cycle). Priced by that cycle alone, a size was never chosen again, so never measured again:
    on an H100, `auto` verified 2.4 tokens a step where `copy` verified 4.9."""
    costs = CostModel()
    for _ in range(2):
        costs.record(1, 1000, 0.010)
        costs.record(5, 1000, 0.012)
    assert choose(0.95, costs, 1000, 64) == 16  # good drafts, cheap verifies: the longest
    costs.record(17, 1000, 5.0)  # its first cycle compiled its kernels
    assert costs.ratio(17, 1000) < 2.0  # still the prior's, from the measured sizes
    assert choose(0.95, costs, 1000, 64) == 16  # so it is chosen again, and measured
    costs.record(17, 1000, 0.016)  # the second is what the size costs
    assert costs.ratio(17, 1000) == pytest.approx(1.6)
    assert costs.first_seen(9, 1000) and not costs.first_seen(17, 1000)


def test_the_guard_holds_auto_off_where_drafting_came_out_slower_and_probes_now_and_then():
    from server.speculative.guard import PROBE_EVERY, SpeedGuard

    guard = SpeedGuard()
    drafting = Drafting("auto", [5, 6, 7, 8, 5, 6], Ratios(0.0), guard)
    assert drafting.length(1000, 64) > 0  # nothing measured yet
    for _ in range(20):
        guard.record(False, 1000, 1, 0.010)  # plain: 10 ms a token
        guard.record(True, 1000, 3, 0.045)  # drafting: 15 ms a token, switches included
    assert guard.holds_off(1000) and not guard.holds_off(100_000)  # only where measured
    tries = []
    for _ in range(3 * PROBE_EVERY):
        k = drafting.length(1000, 64)
        if k:  # leaving plain decoding, the step asks again: the try holds
            assert drafting.length(1000, 64) == k
        tries.append(k)
        drafting.verified([], 0)  # the step ended
    # A try after PROBE_EVERY held steps, the next after twice as many (tries that keep failing
    # cost a turn less and less).
    assert [i for i, k in enumerate(tries) if k] == [PROBE_EVERY - 1, 3 * PROBE_EVERY - 1]
    for _ in range(200):
        guard.record(True, 1000, 4, 0.020)  # drafting got faster: 5 ms a token
    assert not guard.holds_off(1000)
    assert drafting.length(1000, 64) > 0
    status = guard.status()
    assert status["plain_ms_per_token"] == 10.0
    assert status["drafting_ms_per_token"] == pytest.approx(5.0, abs=0.05)
    guard.record(True, 1000, 4, 12.0)  # a kernel compiled on first use: counted at 4x the mean
    assert guard.per_token(True, 1000) < 0.010
    assert not guard.holds_off(1000)


def test_a_request_whose_own_drafts_come_out_slower_is_held_off_whatever_the_worker_saw():
    """The worker's guard mixes every request's drafting: edit turns that copy long spans made
    its drafting mean fast, so a prose turn whose drafts kept failing drafted on (0.88x plain)."""
    from server.speculative.guard import PROBE_EVERY, SpeedGuard

    guard = SpeedGuard()
    for _ in range(40):
        guard.record(False, 1000, 1, 0.010)  # plain: 10 ms a token
        guard.record(True, 1000, 8, 0.030)  # earlier turns' drafting: 3.75 ms a token
    prose = Drafting("auto", [5, 6, 7, 8, 5, 6], Ratios(0.0), guard)
    edit = Drafting("auto", [5, 6, 7, 8, 5, 6], Ratios(0.0), guard)
    assert prose.length(1000, 64) > 0
    for step in range(6):  # this turn's verifies: 1 token each, at 2.5 plain tokens' time
        prose.cycle(step * 0.1, 5, 1000, True, 1, step * 0.1 + 0.025)
        edit.cycle(step * 0.1, 9, 1000, True, 6, step * 0.1 + 0.030)  # another turn copying
    assert not guard.holds_off(1000)  # the worker's mean still says drafting pays
    assert prose.length(1000, 64) == 0  # this request's own says it does not
    assert edit.length(1000, 64) > 0
    tries = 0
    for _ in range(PROBE_EVERY):
        tries += prose.length(1000, 64) > 0
        prose.verified([], 0)
    assert tries == 1  # it still tries now and then: the turn may start copying
    for step in range(30):  # and once its drafts pay, it drafts on
        prose.cycle(step * 0.1, 9, 1000, True, 8, step * 0.1 + 0.030)
    assert prose.length(1000, 64) > 0


def test_the_first_drafting_cycles_of_a_new_size_do_not_hold_auto_off():
    """On MLX CUDA the first verify of each size compiles its kernels (seconds): before the guard
    has a drafting mean to bound them by, they held `auto` off for the rest of the turn."""
    from server.speculative.guard import SpeedGuard

    guard = SpeedGuard()
    drafting = Drafting("auto", [5, 6, 7, 8, 5, 6], CostModel(), guard)
    for step in range(20):
        drafting.cycle(step * 0.01, 1, 1000, False, 1, step * 0.01 + 0.010)  # plain: 10 ms
    drafting.cycle(1.0, 5, 1000, True, 3, 3.0)  # size 5's first cycle: a 2 s compile
    drafting.cycle(3.0, 0, 1000, True, 1, 3.5)  # a switch that caught one too
    drafting.cycle(3.5, 9, 1000, True, 5, 5.5)  # size 9's first
    for step in range(3):
        drafting.cycle(6.0 + step, 5, 1000, True, 3, 6.0 + step + 0.015)  # 5 ms a token
    assert not guard.holds_off(1000)
    assert drafting.costs.ratio(5, 1000) == pytest.approx(1.5)  # the second cycle's measure


def test_the_guard_says_where_a_verify_cycles_time_goes():
    from server.speculative.guard import SpeedGuard

    guard = SpeedGuard()
    guard.record(False, 1000, 1, 0.010)
    for _ in range(4):
        guard.spent("cycle", 0.040)
        guard.spent("wait", 0.012)
        guard.spent("positions", 0.008)
    guard.spent("handling", 0.002)
    status = guard.status()
    assert status["verify_cycle_ms"] == pytest.approx(40.0)
    assert status["verify_wait_ms"] == pytest.approx(12.0)
    assert status["verify_positions_ms"] == pytest.approx(8.0)
    assert status["verify_handling_ms"] == pytest.approx(2.0)
