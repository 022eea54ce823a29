"""What `--model` names: a local MLX folder, a model installed under the home, or a repo id.

Stdlib only: the supervisor resolves names with it without loading MLX.
"""

from __future__ import annotations

import re
from pathlib import Path

from server.edge.contract import models_dir

DEMO_MODEL = "demo"
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HF_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelRefError(ValueError):
    """`--model` names nothing loadable; `hint` says what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def resolve_model_ref(model: str) -> str:
    """What to hand mlx-lm for `model`: a local MLX directory, an installed name or a repo id."""
    local = Path(model).expanduser()
    if is_model_dir(local):
        return str(local.resolve())
    if MODEL_NAME_RE.match(model):
        candidate = models_dir() / model
        if is_model_dir(candidate):
            return str(candidate)
        hint = "run `mlxctl model pull demo`" if model == DEMO_MODEL else "see `mlxctl model ls`"
        raise ModelRefError(f"model {model!r} is not installed", hint)
    if local.exists():
        raise ModelRefError(
            f"{model} is not an MLX model directory (config.json and *.safetensors expected)",
            "import a GGUF file with `mlxctl model import PATH.gguf`",
        )
    if _HF_REPO_RE.match(model):
        return model
    raise ModelRefError(f"cannot resolve model {model!r}", "see `mlxctl model ls`")
