"""Load a model with mlx-lm, doing the fast thing for the backend it will run on."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger(__name__)

# Tests: seconds each load sleeps first, a large model's load on a tiny one.
SLOW_LOAD_ENV = "MLXCTL_TEST_SLOW_LOAD_S"


def backend_name() -> str:
    """Where MLX runs by default in this process: "metal", "cuda" or "cpu"."""
    import mlx.core as mx

    if mx.metal.is_available():
        return "metal"
    if hasattr(mx, "cuda") and mx.cuda.is_available():
        return "cuda"
    return "cpu"


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    config: dict
    path: str
    backend: str
    dequantized: bool
    shard: str = ""  # this rank's part, e.g. tensor-2-rank-1 ("" when not distributed)
    tool_parser: dict | None = None  # {"name", "source"} for /v1/status
    vision: Any = None  # server.model.vision.Vision: the model reads images (None: text only)


def load_model(
    path: str, *, dequantize_on_cpu: bool = True, tool_parser: str | None = None
) -> LoadedModel:
    """Load `path` (a local MLX directory or a Hugging Face repo id) with mlx-lm.

    On the CPU backend quantized matmuls are ~20x slower than float32 ones through OpenBLAS,
    so quantized layers are expanded to float32 at load (costs memory, which CPU hosts have).
    `tool_parser` names an mlx-lm tool parser module (else inferred; see model.tool_parsers).
    """
    from mlx_lm import load

    from server.model import tool_parsers as parsers
    from server.model.vision import load_vision
    from server.model.vision_mrope import MROPE_FAMILIES, load_mrope_vision

    if slow := os.environ.get(SLOW_LOAD_ENV):
        time.sleep(float(slow))

    # mlx-lm types both return shapes as one union; return_config gives the three.
    model, tokenizer, config = cast(
        tuple[Any, Any, dict],
        load(path, tokenizer_config=parsers.tokenizer_config(tool_parser), return_config=True),
    )
    source = "--tool-parser" if tool_parser else "chat template"
    if not tool_parser and (hermes := parsers.fallback(path, tokenizer)) is not None:
        tokenizer, source = hermes, "fallback"
    loaded = _prepared(model, tokenizer, config, path, dequantize_on_cpu)
    loaded.tool_parser = parsers.describe(tokenizer, source)
    float32 = loaded.backend == "cpu" and dequantize_on_cpu
    mrope = config.get("vision_config") and config.get("model_type") in MROPE_FAMILIES
    loaded.vision = (load_mrope_vision if mrope else load_vision)(
        str(path), loaded.model, config, float32
    )
    return loaded


def load_model_shard(path: str, group: Any, info: Any) -> LoadedModel:
    """This rank's part of `path` (`info`: server.model.distributed.RankInfo), prepared as
    `load_model` prepares a whole model."""
    import dataclasses

    from server.model.distributed import load_sharded

    model, tokenizer, config = load_sharded(path, group, info.parallel)
    # Sharded quantized layers have no dequantized form: they stay quantized on CPU.
    loaded = _prepared(model, tokenizer, config, path, "quantization" not in config)
    return dataclasses.replace(loaded, shard=info.label)


def _prepared(model, tokenizer, config, path, dequantize_on_cpu: bool) -> LoadedModel:
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    backend = backend_name()
    dequantized = False
    if backend == "cpu" and dequantize_on_cpu:
        if "quantization" in config:
            model = dequantize_model(model)
            dequantized = True
        model.set_dtype(mx.float32)
        mx.eval(model.parameters())
        log.info("cpu backend: weights held as float32 (dequantized=%s)", dequantized)
    warm_up(model)
    return LoadedModel(model, tokenizer, config, str(path), backend, dequantized)


def warm_up(model: Any, n_tokens: int = 16) -> None:
    """One forward through a fresh cache, so first-use work (kernels, buffers) is done before
    the worker says ready rather than on the first request."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    mx.eval(model(mx.arange(n_tokens)[None], cache=make_prompt_cache(model)))
