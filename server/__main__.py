"""`python -m server --model NAME_OR_PATH`: serve one model over the OpenAI and Anthropic APIs."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from pathlib import Path

from server import contract
from server.model.distributed import launched_rank

# Exit code when the command line cannot run (0 is a graceful stop, 1 a failed start).
EXIT_USAGE = 2


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(text: str) -> int:
    """'1073741824', '512MiB', '8G', '8GB' -> bytes (binary units either way)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r} (e.g. 8GiB, 512MiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve one MLX model over the OpenAI and Anthropic HTTP APIs.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="an installed mlxctl model name, a local MLX directory or a repo id",
    )
    parser.add_argument(
        "--model-name",
        default="",
        help="the name /v1/models lists (default: --model, or its folder name for a path)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; others need an API key)",
    )
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="require this key (x-api-key or Authorization: Bearer); "
        f"default ${contract.API_KEY_ENV}",
    )
    parser.add_argument(
        "--allowed-hosts",
        default="",
        help="comma-separated Host names served besides loopback names and --host; "
        "'*' serves any (default: none; guards against DNS rebinding)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=16,
        help="requests that may wait for the model; more get 429/529 (default 16)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=32 * 1024 * 1024,
        help="largest request body accepted; larger get 413 (default 32 MiB)",
    )
    parser.add_argument(
        "--max-output-tokens",
        type=int,
        default=None,
        help="cap on generated tokens per request (default: the context left)",
    )
    parser.add_argument(
        "--progress-timeout",
        type=float,
        default=180.0,
        help="seconds a busy generation may go without a token or prefill chunk before /health "
        "says stuck (503) and thread stacks go to the log; 0 = off (default 180)",
    )
    parser.add_argument(
        "--decode-concurrency",
        type=positive_int,
        default=32,
        help="sequences that decode together in one batch; more wait (default 32)",
    )
    parser.add_argument(
        "--prompt-concurrency",
        type=positive_int,
        default=8,
        help="prompts that prefill together in one batch (default 8)",
    )
    parser.add_argument(
        "--turn-seconds",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="while replies decode and prompts wait, each side's longest turn: shorter streams "
        "more smoothly, longer batches more replies together (default 1)",
    )
    parser.add_argument(
        "--kv-budget-bytes",
        type=positive_int,
        default=None,
        metavar="BYTES",
        help="KV bytes the running requests may hold together (each counted at its prompt plus "
        "its whole reply); more wait. Default: planned from the device's memory",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=240.0,
        metavar="SECONDS",
        help="a non-stream request still queued this long answers 529/429 with retry-after; "
        "streams get keep-alives instead (default 240; Claude Code retries at 300)",
    )
    parser.add_argument(
        "--tool-parser",
        default=None,
        metavar="NAME",
        help="the mlx-lm tool parser that reads the model's calls (json_tools, qwen3_coder, ...; "
        "default: inferred from the chat template, Hermes JSON where it writes <tool_call>)",
    )
    parser.add_argument(
        "--prefill-step-size",
        type=int,
        default=None,
        help="prompt tokens per prefill step (default: mlx-lm's)",
    )
    cache = parser.add_argument_group("prefix KV cache")
    cache.add_argument(
        "--cache-ram-bytes",
        type=byte_size,
        default=None,
        help="RAM budget, e.g. 8GiB (default 10%% of RAM)",
    )
    cache.add_argument(
        "--cache-disk-bytes",
        type=byte_size,
        default=None,
        help="disk budget; 0 turns the disk tier off (default 20GiB)",
    )
    cache.add_argument(
        "--cache-dir",
        default=None,
        help=f"disk tier folder (default ${contract.HOME_ENV}/cache/kv)",
    )
    cache.add_argument(
        "--cache-write-behind",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="write new entries to disk this long after they settle, on a background thread; "
        "negative: only on stop (default 2)",
    )
    cache.add_argument(
        "--cache-write-budget",
        type=byte_size,
        default=None,
        metavar="BYTES",
        help="most bytes written behind per hour, e.g. 50GiB (SSD wear; the rest waits for the "
        "stop's flush; default no limit)",
    )
    cache.add_argument(
        "--cache-disk-retry",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after a failed disk read or write (full, read-only), serve from RAM only and try "
        "the disk again this much later (default 60)",
    )
    cache.add_argument(
        "--cache-restore",
        choices=["lazy", "eager"],
        default="lazy",
        help="lazy: ready at once, an entry loads on first use; eager: load before ready",
    )
    cache.add_argument(
        "--no-cache", action="store_true", help="no prefix cache: every request prefills"
    )
    cache.add_argument(
        "--warm-prompt",
        action="append",
        default=None,
        metavar="FILE",
        help="prefill this prompt at startup (text, or an OpenAI/Anthropic JSON body); "
        f"repeatable; default ${contract.WARM_PROMPTS_ENV} (os.pathsep-separated)",
    )
    stored = parser.add_argument_group("stored responses (Responses API, store: true)")
    stored.add_argument(
        "--responses-dir",
        default=None,
        help=f"their folder (default ${contract.HOME_ENV}/responses)",
    )
    stored.add_argument(
        "--responses-max-count",
        type=int,
        default=1000,
        metavar="N",
        help="responses kept, the oldest dropped first; 0 stores none (default 1000)",
    )
    stored.add_argument(
        "--responses-max-bytes",
        type=byte_size,
        default=256 << 20,
        metavar="BYTES",
        help="their compressed bytes on disk, the oldest dropped first (default 256MiB)",
    )
    parser.add_argument(
        "--parallel",
        choices=["tensor", "pipeline"],
        default="tensor",
        help="under mlx.launch: split the model across the ranks by tensor (model.shard) or "
        "by pipeline stage (default tensor); rank 0 serves HTTP",
    )
    logs = parser.add_argument_group("log file")
    logs.add_argument(
        "--log-file",
        default=None,
        help="write stdout and stderr to this file, rotated by the worker (default: stderr)",
    )
    logs.add_argument(
        "--log-max-bytes", type=byte_size, default=10 << 20, help="rotate at this size (10MiB)"
    )
    logs.add_argument("--log-backups", type=int, default=3, help="rotated files kept (3)")
    traces = parser.add_argument_group("request traces (off by default)")
    traces.add_argument(
        "--trace-dir",
        default=None,
        help="record each request and its reply or stream as one JSON file here, keys redacted "
        "(POST /v1/trace turns it on or off live)",
    )
    traces.add_argument(
        "--trace-max-bytes", type=byte_size, default=256 << 20, help="the folder's bound (256MiB)"
    )
    traces.add_argument(
        "--trace-max-files", type=int, default=1000, help="most files kept, oldest go (1000)"
    )
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="SIGTERM to exit, request grace and cache flush included; the supervisor passes "
        "its own stop grace (default 15)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default info",
    )
    return parser.parse_args(argv)


def _warm_prompts(given: list[str] | None) -> list[str]:
    if given is not None:
        return given
    return [p for p in os.environ.get(contract.WARM_PROMPTS_ENV, "").split(os.pathsep) if p]


def main(argv: list[str] | None = None) -> int:
    if sys.platform.startswith("linux") and argv is None:
        from server.blas import reexec_with_openblas

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
        from server.logfile import OwnedLog

        # The worker owns its log: a supervisor that stops reading costs nothing here.
        OwnedLog(args.log_file, args.log_max_bytes, args.log_backups).watch()
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("server")

    from server.model_ref import ModelRefError, resolve_model_ref
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
        kv_budget_bytes=args.kv_budget_bytes,
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
