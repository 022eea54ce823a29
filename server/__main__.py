"""`python -m server --model NAME_OR_PATH`: serve one model over the OpenAI and Anthropic APIs."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from server.edge import contract
from server.flags import EXIT_USAGE, parse_args
from server.model.distributed import launched_rank


def _warm_prompts(given: list[str] | None) -> list[str]:
    if given is not None:
        return given
    return [p for p in os.environ.get(contract.WARM_PROMPTS_ENV, "").split(os.pathsep) if p]


def _draft_model(args, model_path: str, log: logging.Logger) -> tuple[str | None, bool]:
    """--draft-model resolved and its tokenizer checked against the model's (True: refused).
    A user's --speculative copy or off wins: the draft model is not loaded then."""
    from server.edge.model_ref import ModelRefError, resolve_model_ref

    if not args.draft_model:
        if args.speculative == "draft":
            log.error("--speculative draft needs --draft-model PATH")
            return None, True
        return None, False
    if args.speculative not in ("auto", "draft"):
        log.warning("--draft-model is unused with --speculative %s", args.speculative)
        return None, False
    try:
        path = resolve_model_ref(args.draft_model)
    except ModelRefError as exc:
        log.error("--draft-model: %s%s", exc, f" ({exc.hint})" if exc.hint else "")
        return None, True
    from server.model.draft import check_draft

    if why := check_draft(model_path, path):
        log.error("--draft-model %s does not share the model's tokenizer: %s", path, why)
        return None, True
    return path, False


def main(argv: list[str] | None = None) -> int:
    if sys.platform.startswith("linux") and argv is None:
        from server.edge.blas import reexec_with_openblas

        reexec_with_openblas()
    args = parse_args(argv)
    rank = launched_rank()
    if rank is not None:
        # server.launch ignores SIGTERM for itself (the group's ranks take it), not for us.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if rank > 0 and args.log_file:  # one log per rank: worker.log, worker.rank1.log, ...
            log_path = Path(args.log_file)
            args.log_file = str(log_path.with_name(f"{log_path.stem}.rank{rank}{log_path.suffix}"))
    if args.log_file:
        from server.edge.logfile import OwnedLog

        # The worker owns its log: a supervisor that stops reading costs nothing here.
        OwnedLog(args.log_file, args.log_max_bytes, args.log_backups).watch()
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("server")

    from server.edge.model_ref import ModelRefError, resolve_model_ref
    from server.settings import Settings, is_loopback

    api_key = args.api_key or os.environ.get(contract.API_KEY_ENV) or None
    if not is_loopback(args.host) and not api_key:
        log.error(
            "refusing to bind %s without an API key; pass --api-key or set %s (or bind 127.0.0.1)",
            args.host,
            contract.API_KEY_ENV,
        )
        return EXIT_USAGE
    try:
        model_path = resolve_model_ref(args.model)
    except ModelRefError as exc:
        log.error("%s%s", exc, f" ({exc.hint})" if exc.hint else "")
        return EXIT_USAGE
    from server.model.tool_parsers import parser_names
    from server.speculative.sources import MODES

    if args.speculative not in MODES:
        log.error("unknown --speculative %r; choose one of: %s", args.speculative, ", ".join(MODES))
        return EXIT_USAGE
    if args.speculative == "mtp":
        from server.model.mtp import why_no_mtp

        if why := why_no_mtp(model_path):
            log.error("--speculative mtp: %s", why)
            return EXIT_USAGE
    draft_model_path, refused = _draft_model(args, model_path, log)
    if refused:
        return EXIT_USAGE
    if args.tool_parser and args.tool_parser not in parser_names():
        log.error(
            "unknown --tool-parser %r (mlx-lm has: %s)", args.tool_parser, ", ".join(parser_names())
        )
        return EXIT_USAGE
    settings = Settings(
        model=args.model,
        model_path=model_path,
        model_name=args.model_name,
        progress_timeout=args.progress_timeout,
        decode_concurrency=args.decode_concurrency,
        prompt_concurrency=args.prompt_concurrency,
        turn_seconds=args.turn_seconds,
        prefill_streams=args.prefill_streams,
        kv_budget_bytes=args.kv_budget_bytes,
        speculative=args.speculative,
        draft_model_path=draft_model_path,
        draft_cache_entries=args.draft_cache_entries,
        draft_cache_bytes=args.draft_cache_bytes,
        queue_timeout_s=args.queue_timeout,
        host=args.host,
        port=args.port,
        api_key=api_key,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_output_tokens=args.max_output_tokens,
        prefill_step_size=args.prefill_step_size,
        log_level=args.log_level,
        cache_enabled=not args.no_cache,
        cache_ram_bytes=args.cache_ram_bytes,
        cache_disk_bytes=args.cache_disk_bytes,
        cache_dir=args.cache_dir or str(contract.kv_cache_dir()),
        cache_write_behind_s=None if args.cache_write_behind < 0 else args.cache_write_behind,
        cache_restore=args.cache_restore,
        cache_disk_retry_s=args.cache_disk_retry,
        cache_write_bytes_per_hour=args.cache_write_budget,
        stop_grace_s=args.stop_grace,
        warm_prompts=_warm_prompts(args.warm_prompt),
        responses_dir=args.responses_dir or str(contract.responses_dir()),
        responses_max_count=max(0, args.responses_max_count),
        responses_max_bytes=args.responses_max_bytes,
        allowed_hosts=[h.strip() for h in args.allowed_hosts.split(",") if h.strip()],
        parallel=args.parallel,
        tool_parser=args.tool_parser,
        trace_dir=args.trace_dir,
        trace_max_bytes=args.trace_max_bytes,
        trace_max_files=args.trace_max_files,
        # MLXCTL_SCHEDULER=sequential: one request at a time, as before batching (benchmarks).
        batch=os.environ.get("MLXCTL_SCHEDULER", "batched") != "sequential",
    )
    from server.serve import serve

    code = serve(settings)
    # The generation thread has finished (cache flushed); skip interpreter teardown, where
    # MLX's CPU stream threads can abort in static destructors and turn a clean stop into 134.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
