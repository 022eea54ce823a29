"""The draft model across requests and with copies: a conversation's next turn feeds the draft only
its new tokens (a recurrent draft state only where it holds a whole prefix) and decodes the same
tokens; the kept caches are bounded by count and bytes; copies of the context stacked on the
draft's guesses lead inside a copied stretch, with the same greedy tokens; a recurrent draft state
goes back before rejected guesses instead of prefilling the prompt again."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_model
from tests.server.speculative.test_solo_drafting import PROMPT, decode, forced

MORE = "\n\ndef depth(width, height):\n    return width + height\n"


class Counting:
    """A model that counts the tokens it runs (the draft's fed tokens)."""

    def __init__(self, model):
        self.model, self.fed, self.runs = model, 0, []

    def __call__(self, inputs, cache=None):
        self.fed += inputs.shape[1]
        self.runs.append(inputs.shape[1])
        return self.model(inputs, cache=cache)

    def __getattr__(self, name):
        return getattr(self.model, name)


def load(**kwargs):
    from server.model.loading import load_model

    return load_model(str(tiny_model(**kwargs)))


@pytest.fixture(scope="module", params=["qwen2", "qwen3_next"])
def pair(request):
    """(target, draft of other weights) of one family: plain KV, or a hybrid's recurrent state."""
    family = request.param
    small = {"layers": 1} if family == "qwen2" else {}  # a hybrid needs its attention layer
    return load(family=family), load(family=family, seed=1, **small)


def turn(target, draft, prompt, store, steps=24, **kwargs):
    """One reply drafted with `draft` on `store`'s caches: (tokens, its source)."""
    from server.speculative.draft_model import DraftModel
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    source = DraftModel(draft, prompt, store=store, **kwargs)
    source.fed_at_start = getattr(draft, "fed", None)  # what its catch-up prefill ran
    drafting = Drafting("draft", prompt, CostModel(), source=source)
    tokens, _, _ = decode(target, prompt, steps, drafting=drafting)
    drafting.close()  # as the scheduler does at the reply's end
    return tokens, source


def test_the_next_turn_feeds_the_draft_only_its_new_tokens(pair):
    from server.speculative.draft_store import DraftCaches

    target, draft = pair
    store, counting = DraftCaches(4, 1 << 30), Counting(draft.model)
    first = target.tokenizer.encode(PROMPT)
    reply, _ = turn(target, counting, first, store)
    assert len(store) == 1
    second = first + reply + target.tokenizer.encode(MORE)
    counting.fed = 0
    tokens, source = turn(target, counting, second, store)
    reused, prefilled = source.record.draft_reused, source.record.draft_prefilled
    assert reused >= len(first) and reused + prefilled == len(second) - 1
    assert source.fed_at_start == prefilled < len(second) - len(first)  # only its new tokens
    assert store.hits == 1 and store.reused_tokens == reused
    assert tokens == decode(target, second, 24)[0]


def test_a_recurrent_draft_state_is_reused_only_as_a_whole_prefix():
    from server.speculative.draft_store import DraftCaches

    target = load(family="qwen3_next")
    draft = load(family="qwen3_next", seed=1).model
    prompt = target.tokenizer.encode(PROMPT)
    store = DraftCaches(4, 1 << 30)
    turn(target, draft, prompt, store)
    # The same start, then another ending: a trimmable cache would serve its prefix; this not.
    branch = prompt[: len(prompt) // 2] + target.tokenizer.encode(MORE)
    tokens, source = turn(target, draft, branch, store)
    assert source.record.draft_reused == 0 and (store.hits, store.misses) == (0, 2)
    assert tokens == decode(target, branch, 24)[0]


def kv_cache(model, tokens):
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    model(mx.array([tokens]), cache=cache)
    mx.eval([c.state for c in cache])
    return cache


def test_the_least_recently_kept_go_past_the_count_and_the_bytes():
    from server.model.kv_state import cache_nbytes
    from server.speculative.draft_store import DraftCaches

    model = load(seed=1, layers=1).model
    a, b, c = ([base + i for i in range(40)] for base in (10, 200, 400))
    store = DraftCaches(2, 1 << 30)
    for tokens in (a, b, c):
        store.put(tokens, kv_cache(model, tokens))
    assert len(store) == 2 and store.evicted == 1
    assert store.take(a + [7]) is None  # the oldest went
    taken = store.take(c[:30] + [7, 8])  # the longest shared prefix, trimmed to it
    assert taken is not None and taken[0] == c[:30]
    one = cache_nbytes(kv_cache(model, a))
    store = DraftCaches(8, one + one // 2)
    store.put(a, kv_cache(model, a))
    store.put(b, kv_cache(model, b))
    assert len(store) == 1 and store.nbytes <= one + one // 2
    assert store.take(b + [7]) is not None
    store.put(a, kv_cache(model, a))
    store.put(a + [1, 2], kv_cache(model, a + [1, 2]))  # it serves every lookup `a` could
    assert len(store) == 1


def test_copies_stacked_on_the_draft_lead_inside_a_copied_stretch():
    # The reply is forced to copy the prompt with changes; the draft model cannot see that.
    from server.speculative.draft_store import DraftCaches

    target, draft = load(), load(seed=1, layers=1)
    prompt = target.tokenizer.encode(PROMPT)
    steps = len(target.tokenizer.encode(PROMPT)) + 4
    plain, _, _ = decode(target, prompt, steps, processors=[forced(target)])
    runs = {}
    for stack in (False, True):
        from server.speculative.draft_model import DraftModel
        from server.speculative.policy import CostModel
        from server.speculative.session import Drafting

        counting = Counting(draft.model)
        source = DraftModel(counting, prompt, store=DraftCaches(4, 1 << 30), stack=stack)
        drafting = Drafting("draft", prompt, CostModel(), source=source)
        tokens, _, _ = decode(target, prompt, steps, processors=[forced(target)], drafting=drafting)
        assert tokens == plain
        runs[stack] = (drafting.record, counting.fed)
    (alone, alone_fed), (stacked, stacked_fed) = runs[False], runs[True]
    assert alone.copied == 0 and stacked.copied > 0
    assert stacked.tokens_per_step > alone.tokens_per_step
    assert stacked.accepted / stacked.drafted > alone.accepted / alone.drafted
    assert stacked_fed < alone_fed  # fewer draft forwards


def test_a_recurrent_draft_state_goes_back_before_its_rejected_guesses():
    from server.speculative.draft_model import DraftModel
    from server.speculative.policy import CostModel
    from server.speculative.session import Drafting

    target = load(family="qwen3_next")
    draft = Counting(load(family="qwen3_next", seed=1).model)
    prompt = target.tokenizer.encode(PROMPT)
    drafting = Drafting("draft", prompt, CostModel(), source=DraftModel(draft, prompt))
    tokens, _, _ = decode(target, prompt, 48, drafting=drafting)
    assert tokens == decode(target, prompt, 48)[0]
    assert drafting.record.accepted < drafting.record.drafted  # guesses were rejected
    assert sum(n >= len(prompt) - 1 for n in draft.runs) == 1  # the prompt never ran again


def test_admission_counts_the_drafts_kv_and_drops_its_kept_caches_before_the_ram_tier():
    """The draft model's caches are device memory too: a reply's estimate holds its draft's KV,
    and a job short of memory drops the kept draft caches (a draft prefills again, cheaply)
    before the prefix cache's RAM tier is written out and dropped."""
    from types import SimpleNamespace

    from server.engine.admission import on_device
    from server.engine.batch_limits import kv_bytes_per_token
    from server.model.memory import HEADROOM, DeviceMemory
    from server.speculative.draft_store import DraftCaches

    target, draft = load(), load(seed=1, layers=1)
    caches = DraftCaches(4, 1 << 30)
    tokens = list(range(10, 50))
    caches.put(tokens, kv_cache(draft.model, tokens))
    held, shed = caches.nbytes, []
    cache = SimpleNamespace(shed=lambda s: shed.append(s) or {"freed_bytes": 0})
    settings = SimpleNamespace(decode_concurrency=4, prompt_concurrency=2, kv_budget_bytes=None)
    runner = SimpleNamespace(
        loaded=target, draft=draft, draft_caches=caches, cache=cache, settings=settings
    )
    plan = on_device(runner, lambda: [(1, 1)])  # type: ignore[arg-type]
    per_token = kv_bytes_per_token(target.model) + kv_bytes_per_token(draft.model)
    assert plan.estimate(100, 28) == per_token * 128
    # A device with room for `held` bytes, where dropping the kept caches frees `held` more.
    device = {"active": 19 * held}
    limit = int(20 * held / (1 - HEADROOM))
    plan.memory = lambda: DeviceMemory(limit, "fake", device["active"], 0)
    names = [r.name for r in plan.reliefs]
    assert names.index("the draft model's kept caches") < names.index("the prefix cache's RAM tier")
    relief = next(r for r in plan.reliefs if r.name == "the draft model's kept caches")
    drop = relief.free

    def drop_and_free() -> int:
        freed = drop()
        device["active"] -= freed
        return freed

    relief.free = drop_and_free
    job = SimpleNamespace(waits_for_memory=False, request=SimpleNamespace(request_id="r"))
    assert plan.fits(job, held + held // 2, [(1, 1)], prefilling=0)  # type: ignore[arg-type]
    assert len(caches) == 0 and caches.nbytes == 0 and caches.evicted == 1
    assert shed == []  # the prefix cache's RAM tier was not touched
