"""`python -m server --model NAME_OR_PATH`: serve one model over the OpenAI and Anthropic APIs."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _reexec_with_openblas() -> None:
    """Restart once with a system OpenBLAS preloaded (must run before mlx is imported)."""
    from mlxctl.blas import find_openblas, worker_env

    blas = find_openblas()
    if blas and blas not in os.environ.get("LD_PRELOAD", ""):
        # orig_argv keeps interpreter flags such as -P (no cwd on sys.path) across the re-exec.
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], worker_env())


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
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; others need an API key)",
    )
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="require this key (x-api-key or Authorization: Bearer); default $MLXCTL_API_KEY",
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
        "--prefill-step-size",
        type=int,
        default=None,
        help="prompt tokens per prefill step (default: mlx-lm's)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default info",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if sys.platform.startswith("linux") and argv is None:
        _reexec_with_openblas()
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("server")

    from mlxctl.errors import ModelError
    from mlxctl.models.registry import resolve
    from server.settings import Settings, is_loopback

    api_key = args.api_key or os.environ.get("MLXCTL_API_KEY") or None
    if not is_loopback(args.host) and not api_key:
        log.error(
            "refusing to bind %s without an API key; pass --api-key or set "
            "MLXCTL_API_KEY (or bind 127.0.0.1)",
            args.host,
        )
        return 2
    try:
        model_path = resolve(args.model)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    settings = Settings(
        model=args.model,
        model_path=model_path,
        host=args.host,
        port=args.port,
        api_key=api_key,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_output_tokens=args.max_output_tokens,
        prefill_step_size=args.prefill_step_size,
        log_level=args.log_level,
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
