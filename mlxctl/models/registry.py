"""Installed models under the mlxctl home, and resolving a model name to something mlx-lm loads."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from mlxctl import paths
from mlxctl.errors import ModelError
from mlxctl.models.gguf_import import import_gguf  # mlx is imported inside, on use
from server.edge.model_ref import DEMO_MODEL, MODEL_NAME_RE, ModelRefError, is_model_dir
from server.edge.model_ref import resolve_model_ref as _resolve_ref

__all__ = ["DEMO_MODEL", "is_model_dir"]


@dataclass
class ModelInfo:
    name: str
    path: str
    size_bytes: int
    architecture: str
    quantization: str
    context_length: int | None
    inputs: str = "text"  # "text, image" for a vision-language model

    def to_dict(self) -> dict:
        return asdict(self)


def validate_name(name: str) -> str:
    if not MODEL_NAME_RE.match(name):
        raise ModelError(
            f"invalid model name {name!r}",
            hint="use letters, digits, '.', '_' or '-' (at most 64 characters)",
        )
    return name


def model_dir(name: str) -> Path:
    return paths.models_dir() / validate_name(name)


def describe(path: Path, name: str | None = None) -> ModelInfo:
    """Read a model directory's config (no mlx import) into a ModelInfo."""
    config = json.loads((path / "config.json").read_text())
    quant = config.get("quantization") or {}
    label = (config.get("mlxctl") or {}).get("quantization")
    if not label:
        label = f"{quant['bits']}-bit" if quant.get("bits") else "none"
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    text = config.get("text_config") or {}  # a vision-language model's language side
    return ModelInfo(
        name=name or path.name,
        path=str(path),
        size_bytes=size,
        architecture=config.get("model_type", "unknown"),
        quantization=label,
        context_length=config.get("max_position_embeddings") or text.get("max_position_embeddings"),
        inputs="text, image" if config.get("vision_config") else "text",
    )


def installed() -> list[ModelInfo]:
    root = paths.models_dir()
    if not root.is_dir():
        return []
    # Staging folders start with '.', so a half-imported model is never listed.
    return [
        describe(child)
        for child in sorted(root.iterdir())
        if not child.name.startswith(".") and is_model_dir(child)
    ]


def find(name: str) -> ModelInfo:
    """The installed model `name`: what `remove(name)` would delete and free."""
    path = model_dir(name)
    if not is_model_dir(path):
        raise ModelError(f"no installed model named {name!r}", hint="see `mlxctl model ls`")
    return describe(path)


def remove(name: str) -> ModelInfo:
    info = find(name)
    path = Path(info.path)
    # Rename first so a crash mid-delete never leaves a half model that still looks installed.
    doomed = path.with_name(f".rm-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return info


def resolve(model: str) -> str:
    """What to hand mlx-lm for `model`: an installed name, a local MLX directory or a HF repo id.

    Raises ModelError with a hint when it is none of those (the worker's own rule, once).
    """
    try:
        return _resolve_ref(model)
    except ModelRefError as exc:
        raise ModelError(str(exc), hint=exc.hint) from None


def import_file(gguf: Path, name: str | None = None) -> ModelInfo:
    """Import a local GGUF file as `name` (default: the file's stem)."""
    if not gguf.is_file():
        raise ModelError(f"no such file: {gguf}")
    name = validate_name(name or gguf.stem)
    destination = model_dir(name)
    if destination.exists():
        raise ModelError(
            f"a model named {name!r} already exists",
            hint=f"pick another --name or `mlxctl model rm {name}`",
        )
    import_gguf(gguf, destination)
    return describe(destination)
