"""The worker's command line: every flag of `python -m server`, its type and its default."""

from __future__ import annotations

import argparse
import re

from server.edge import contract

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


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a whole number of 0 or more: {text!r}")
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
        "--prefill-streams",
        type=positive_int,
        default=None,
        metavar="N",
        help="prompts whose chunks prefill at once, each on its own stream: on the CPU backend a "
        "core each (default: one per core on the CPU backend, at most 4; 1 on a GPU)",
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
        "--speculative",
        default="auto",
        metavar="MODE",
        help="speculative decoding while one request decodes alone: auto (draft where the "
        "measured cost model says it pays: with the model's own MTP head where the checkpoint "
        "has one, else the draft model when one is given, else copies of the context), copy "
        "(always draft copies of the context), mtp (always draft with the model's MTP head, "
        "copies of the context stacked on its guess; exit 2 without one), draft (always draft "
        "with --draft-model), off. Default: auto",
    )
    parser.add_argument(
        "--draft-model",
        default=None,
        metavar="PATH",
        help="a small model with this model's tokenizer that drafts for it (a local MLX "
        "directory, an installed name or a repo id); used by --speculative auto and draft",
    )
    parser.add_argument(
        "--draft-cache-entries",
        type=non_negative_int,
        default=4,
        metavar="N",
        help="the draft model's KV caches of recent requests kept in RAM, so a conversation's "
        "next turn feeds the draft only its new tokens (0 keeps none; default 4)",
    )
    parser.add_argument(
        "--draft-cache-bytes",
        type=positive_int,
        default=4 << 30,
        metavar="BYTES",
        help="the most bytes those caches hold together, least recently kept going first "
        "(default 4 GiB: a 0.6B draft holds about 112 KiB a token)",
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
