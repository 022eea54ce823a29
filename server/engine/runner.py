"""What one request needs on the generation thread: its cache state, its limit, its logits
processors and reply parser, and its end (usage, metrics, the stored KV state).

Built once the model loads. The scheduler, the lockstep scheduler and the one-at-a-time path call
down into it; nothing in it calls back up.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from server.decoding.constrained.streaming import call_streamer
from server.decoding.processors import ProcessorFactory, processors_for
from server.decoding.reasoning import reply_parser
from server.decoding.reply_parser import ReplyParser
from server.engine import resume
from server.engine.job import Generation, Job
from server.engine.watchdog import Watchdog
from server.errors import ServiceUnavailable
from server.metrics import Metrics
from server.model.draft import weight_bytes, weight_ratio
from server.model.kv_state import cache_len
from server.model.loading import LoadedModel
from server.model.mtp import MTPHead
from server.prefix_cache.seam import PrefixCache
from server.prompt.render import PromptRenderer
from server.request import ChatRequest, Failed, Finished, Usage
from server.settings import Settings
from server.speculative.copy_drafts import NOT_A_TOKEN
from server.speculative.draft_model import DRAFT_TOKENS, DraftModel
from server.speculative.draft_store import DraftCaches
from server.speculative.guard import SpeedGuard
from server.speculative.mtp_drafts import MTPDrafts
from server.speculative.policy import CANDIDATES, Acceptance, CostModel, choose
from server.speculative.session import Drafting
from server.speculative.stats import DraftStats

log = logging.getLogger("server.engine")

NO_MEMORY = {"active_bytes": 0, "peak_bytes": 0, "cache_bytes": 0}


class Runner:
    def __init__(
        self,
        loaded: LoadedModel,
        renderer: PromptRenderer,
        cache: PrefixCache,
        settings: Settings,
        *,
        metrics: Metrics,
        watchdog: Watchdog,
        processor_factories: list[ProcessorFactory],
        draft: LoadedModel | None = None,
        mtp: MTPHead | None = None,
    ):
        self.loaded = loaded
        self.renderer = renderer
        self.cache = cache
        self.settings = settings
        self.metrics = metrics
        self.watchdog = watchdog  # beats at every token and prefill chunk
        self.processor_factories = processor_factories
        self.running_alone: Job | None = None  # the one-at-a-time path's job (status counts it)
        # MLX memory figures, taken on the generation thread after each job for the admin routes.
        self.memory: dict[str, int] = dict(NO_MEMORY)
        # Speculative decoding: one cost model per draft source, the worker's figures.
        self.draft = draft  # --draft-model's model: `auto` and `draft` draft with it
        self.copy_costs = CostModel()
        self.draft_costs = CostModel(weight_ratio(draft.model, loaded.model)) if draft else None
        # The draft's caches of recent requests: a conversation's next turn feeds it new tokens.
        entries, max_bytes = settings.draft_cache_entries, settings.draft_cache_bytes
        self.draft_caches = DraftCaches(entries, max_bytes) if draft else None
        self.mtp = mtp  # the model's own MTP head: `auto` and `mtp` draft with it
        self.mtp_costs = CostModel(mtp.nbytes() / weight_bytes(loaded.model)) if mtp else None
        self.draft_guard = SpeedGuard()
        self.draft_stats = DraftStats(settings.speculative)

    # -- before the first token ---------------------------------------------------------------

    def cache_for(
        self, tokens: list[int], images: list[Any] | None = None
    ) -> tuple[list[Any], int]:
        """The prefix cache's state for `tokens` (or a fresh one), and how many it holds, placed
        for the prompt's `images` (M-RoPE models decode at positions they shift)."""
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        try:
            prompt_cache, n_cached = self.cache.lookup(tokens)
        except Exception:  # runs outside any guarded step: a failed lookup is only a miss
            log.exception("prefix cache lookup failed; prefilling from scratch")
            prompt_cache, n_cached = None, 0
        if prompt_cache is None:
            prompt_cache, n_cached = make_prompt_cache(self.loaded.model), 0
        if n_cached >= len(tokens):
            # At least one prompt token must run through the model to get the first logits.
            trim_prompt_cache(prompt_cache, n_cached - len(tokens) + 1)
            n_cached = len(tokens) - 1
        if images and (vision := self.loaded.vision) is not None:
            prompt_cache = vision.place(prompt_cache, images)
        return prompt_cache, n_cached

    def max_tokens(self, request: ChatRequest, prompt_tokens: int) -> int:
        """The request's own limit, capped by what is left of the context and the worker's cap."""
        limit = self.renderer.context_length
        budget = [request.max_tokens or ((limit - prompt_tokens) if limit else 4096)]
        if limit:
            budget.append(limit - prompt_tokens)
        if self.settings.max_output_tokens:
            budget.append(self.settings.max_output_tokens)
        return max(1, min(budget))

    def reply_limit(self, job: Job) -> int:
        """The whole reply's limit (resumed tokens included)."""
        return self.max_tokens(job.request, job.rendered.prompt_tokens)

    def decode_limit(self, job: Job) -> int:
        """The tokens left to decode: the reply's limit less those it resumed with."""
        return max(1, self.reply_limit(job) - job.rendered.resumed)

    def attach_processors(self, job: Job) -> None:
        # Factories see the limit the request decodes under (the worker's cap included).
        limit = self.reply_limit(job)
        seen = dataclasses.replace(job, request=dataclasses.replace(job.request, max_tokens=limit))
        job.logits_processors = processors_for(self.processor_factories, seen, self.loaded)
        resume.fast_forward(job.logits_processors, job.rendered)

    def drafting(self, job: Job) -> Drafting | None:
        """A lone sequence's drafting (None: --speculative off)."""
        mode = self.settings.speculative
        if mode == "off":
            return None
        context = list(job.rendered.tokens)
        for span in job.rendered.images:  # an image's cache-key ids are no tokens to copy
            context[span.start : span.end] = [NOT_A_TOKEN] * (span.end - span.start)
        views = job.rendered.copy_views  # copies read the prompt as the model writes it too
        mtp, mtp_costs = self.mtp, self.mtp_costs
        if mtp and mtp_costs and (mode == "mtp" or (mode == "auto" and self._pays(mtp_costs, job))):
            mtp_source = MTPDrafts(mtp, context, views=views)  # its guess reads no images
            return Drafting(mode, context, mtp_costs, self.draft_guard, mtp_source)
        if self.draft is not None and self.draft_costs and mode not in ("copy", "mtp"):
            if self._pays(self.draft_costs, job, forced=mode == "draft"):
                source = DraftModel(
                    self.draft.model,
                    context,
                    self.settings.prefill_step_size,
                    store=self.draft_caches,
                    chain=DRAFT_TOKENS if mode == "draft" else None,  # auto's k is measured
                    views=views,
                )
                return Drafting(mode, context, self.draft_costs, self.draft_guard, source)
            mode = "auto"
        return Drafting(mode, context, self.copy_costs, self.draft_guard, views=views)

    @staticmethod
    def _pays(costs: CostModel, job: Job, forced: bool = False) -> bool:
        """Whether this reply drafts with a model (the draft model, whose prompt then prefills
        it too, or, under `auto`, the MTP head): not on images (a draft model reads none), and
        not where `auto` would never choose it (`forced`: it always would): plain steps ask a
        model for no guesses, so a reply's acceptance cannot rise from its prior."""
        if job.rendered.images:
            return False
        context = len(job.rendered.tokens)
        return forced or choose(Acceptance().rate, costs, context, CANDIDATES[-1]) > 0

    def draft_status(self) -> dict:
        # The measured source's: `auto` may draft copies beside a loaded head or draft model.
        sources = (self.mtp_costs, self.draft_costs, self.copy_costs)
        costs = next((c for c in sources if c and c.seconds), self.copy_costs)
        return {
            **self.draft_stats.status(costs.known()),
            "measured": self.draft_guard.status(),
            "draft_model": self.draft.path if self.draft else None,
            "draft_caches": self.draft_caches.status() if self.draft_caches else None,
            "mtp": self.mtp is not None,
        }

    def parser(self, job: Job) -> ReplyParser:
        tokenizer, rendered = self.loaded.tokenizer, job.rendered
        answer = ReplyParser(
            tool_parser=tokenizer.tool_parser if rendered.parse_tools else None,
            call_start=tokenizer.tool_call_start,
            call_end=tokenizer.tool_call_end,
            tools=rendered.tools,
            stop=job.request.stop,
            primed=rendered.primed,
            call_streamer=call_streamer(rendered.constraint, rendered.tools),
        )
        return reply_parser(answer, tokenizer, rendered)  # reasoning split off, where it thinks

    # -- the cache ----------------------------------------------------------------------------

    def store(
        self, tokens: list[int], prompt_cache: list[Any] | None, kind: str = "prompt"
    ) -> None:
        """Keep the KV state `prompt_cache` holds for `tokens`; a failed store costs only it."""
        offset = cache_len(prompt_cache) if prompt_cache else 0
        if prompt_cache is None or offset <= 0:
            return
        try:
            self.cache.store(tokens[:offset], prompt_cache, kind=kind)
        except Exception:
            log.exception("prefix cache store failed")

    def record_prefill(self, n_tokens: int, seconds: float) -> None:
        # Measured speed lets the cache report the prefill seconds it saved. Short prefills are
        # mostly the first decode step, so they would skew it.
        if n_tokens >= 64 and seconds > 0:
            self.cache.record_prefill(n_tokens, seconds)

    # -- the end ------------------------------------------------------------------------------

    def finish(self, job: Job, run: Generation, parser: ReplyParser, usage: Usage) -> None:
        """Count the reply's tokens, flush the parser, report, and store the KV state."""
        generated, reason = run.generated, run.reason
        eos = self.loaded.tokenizer.eos_token_ids
        ends_with_eos = reason == "stop" and bool(generated) and generated[-1] in eos
        usage.completion_tokens = len(generated) - (1 if ends_with_eos else 0)
        usage.reasoning_tokens = min(getattr(parser, "reasoning_tokens", 0), len(generated))
        for event in parser.finish():
            job.emit(event)
        if any(getattr(p, "cut_short", False) for p in job.logits_processors):
            reason = "length"  # a call closed early to fit max_tokens: say it was cut
        if parser.calls and reason != "length":
            reason = "tool_calls"
        now = time.perf_counter()
        first = run.first_token_at or now
        self.record_prefill(len(job.rendered.tokens) - run.n_cached, first - run.started)
        decode_s = now - first
        tps = (len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else 0.0
        self.metrics.generation_done(
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens,
            now - run.started,
            False,
        )
        queued = (job.admitted or job.submitted) - job.submitted
        drafts = None
        if run.drafts is not None:
            self.draft_stats.add(job.request.request_id, run.drafts)
            drafts = run.drafts.summary()
        job.emit(
            Finished(reason, usage, parser.stopped, first - job.submitted, tps, queued, drafts)
        )
        if not run.checkpointed:  # the prompt but its last token, which the next re-renders
            self.store(job.rendered.tokens[:-1], run.prompt_cache)

    def finish_cancelled(
        self, job: Job, usage: Usage, seconds: float, run: Generation | None = None
    ) -> None:
        """Report the cancel; a reply cut short after its prefill keeps its prompt's state as
        `finish` would (the next turn of that conversation starts from it)."""
        self.metrics.generation_done(
            usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens, seconds, True
        )
        if job.abort_reason:
            job.emit(Failed(ServiceUnavailable(job.abort_reason)))
        else:
            job.emit(Finished("cancelled", usage))
        if run is not None and run.prefilled and not run.checkpointed:
            self.store(job.rendered.tokens[:-1], run.prompt_cache)

    @staticmethod
    def settle() -> None:
        """Wait for work still queued on the device (a generation stopped mid-step leaves some)."""
        import mlx.core as mx

        try:
            mx.synchronize()
        except Exception:
            log.exception("synchronize failed")

    def snapshot_memory(self) -> None:
        import mlx.core as mx

        self.memory = {
            "active_bytes": int(mx.get_active_memory()),
            "peak_bytes": int(mx.get_peak_memory()),
            "cache_bytes": int(mx.get_cache_memory()),
        }
