"""Load a model with mlx-lm, doing the fast thing for the backend it will run on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


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


def load_model(path: str, *, dequantize_on_cpu: bool = True) -> LoadedModel:
    """Load `path` (a local MLX directory or a Hugging Face repo id) with mlx-lm.

    On the CPU backend quantized matmuls are ~20x slower than float32 ones through OpenBLAS,
    so quantized layers are expanded to float32 at load (costs memory, which CPU hosts have).
    """
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model

    model, tokenizer, config = load(path, return_config=True)
    backend = backend_name()
    dequantized = False
    if backend == "cpu" and dequantize_on_cpu:
        if "quantization" in config:
            model = dequantize_model(model)
            dequantized = True
        model.set_dtype(mx.float32)
        mx.eval(model.parameters())
        log.info("cpu backend: weights held as float32 (dequantized=%s)", dequantized)
    return LoadedModel(model, tokenizer, config, str(path), backend, dequantized)
