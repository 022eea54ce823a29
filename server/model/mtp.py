"""A model's own multi-token-prediction (MTP) head, for drafting: Qwen3-Next and Qwen3.5 style
(`mtp.*` weights: the last hidden state and the next token's embedding, each normed, joined by
`fc`, full-attention decoder layers of the model's own kind, a final norm, the model's LM head).

mlx-lm's loaders drop `mtp.*` in sanitize; this reads those tensors from the checkpoint's
safetensors files after the load (headers first: a checkpoint without them costs no read).
mlx-vlm 0.7.10's Qwen3.5 drafter runs mlx-vlm's own layers and round protocol (the whole
prompt's hidden states at prefill) and has no qwen3_next sibling: the head here reuses the loaded
model's decoder-layer class and this engine's verify (tests check it computes what mlx-vlm's does).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any, cast

log = logging.getLogger(__name__)

FAMILIES = ("qwen3_next", "qwen3_5", "qwen3_5_moe")  # model types whose MTP head this builds
PREFIX = "mtp."
# Checkpoints in the original layout store these norms centred on zero (the layer adds 1).
_CENTRED_NORMS = ("norm.weight", "pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight")


def _header(file: Path) -> dict:
    """A safetensors file's header (tensor names, and `__metadata__`) without its tensors."""
    with file.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return cast(dict, json.loads(f.read(size)))


def mtp_files(model_path: str | Path) -> list[Path]:
    """The checkpoint's safetensors files holding `mtp.*` tensors (empty: it has no MTP head)."""
    found = []
    for file in sorted(Path(model_path).glob("*.safetensors")):
        try:
            if any(name.startswith(PREFIX) for name in _header(file)):
                found.append(file)
        except (OSError, ValueError, struct.error):
            continue  # an unreadable file is the loader's to report
    return found


def why_no_mtp(model_path: str | Path, config: dict | None = None) -> str | None:
    """Why `--speculative mtp` cannot draft with this checkpoint; None when it can."""
    if config is None:
        try:
            config = json.loads((Path(model_path) / "config.json").read_text())
        except (OSError, ValueError) as exc:
            return f"its config.json cannot be read ({exc})"
    family = config.get("model_type")
    if family not in FAMILIES:
        return f"MTP heads are built for {', '.join(FAMILIES)}, not {family}"
    if not mtp_files(model_path):
        return "the checkpoint has no mtp.* weights (converted checkpoints often drop them)"
    return None


def _language(model: Any) -> Any:
    """The language model: Qwen3.5's sits inside a multimodal wrapper."""
    return getattr(model, "language_model", model)


def _lm_head(model: Any) -> Any:
    lm = _language(model)
    tied = getattr(lm.args, "tie_word_embeddings", False)
    return lm.model.embed_tokens.as_linear if tied else lm.lm_head


class MTPHead:
    """The head and what it shares with the model: the embedding and the LM head."""

    def __init__(self, module: Any, model: Any):
        self.module = module
        self.embed = _language(model).model.embed_tokens
        self.lm_head = _lm_head(model)

    def make_cache(self) -> list[Any]:
        from mlx_lm.models.cache import KVCache

        return [KVCache() for _ in self.module.layers]

    def __call__(self, hidden: Any, tokens: Any, cache: list[Any]) -> tuple[Any, Any]:
        """Logits and hidden states for the pairs (hidden[i], tokens[i]): a guess at the token
        after tokens[i], where hidden[i] is the model's state before it ([1, n, H], [1, n])."""
        out = self.module(hidden, self.embed(tokens), cache)
        return self.lm_head(out), out

    def nbytes(self) -> int:
        """Weight bytes one proposal reads: the head's and the LM head's."""
        from mlx.utils import tree_flatten

        weights = cast(list[tuple[str, Any]], tree_flatten(self.module.parameters()))
        return sum(v.nbytes for _, v in weights) + self.embed.weight.nbytes


def new_head(model: Any, n_layers: int) -> Any:
    """An empty head shaped for `model`: its decoder layers are full-attention ones."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.base import create_attention_mask

    lm = _language(model)
    args = lm.args
    layer_class = type(lm.model.layers[0])
    full = args.full_attention_interval - 1  # a layer index that attends to every position
    size, eps = args.hidden_size, args.rms_norm_eps

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre_fc_norm_embedding = nn.RMSNorm(size, eps=eps)
            self.pre_fc_norm_hidden = nn.RMSNorm(size, eps=eps)
            self.fc = nn.Linear(2 * size, size, bias=False)
            self.layers = [layer_class(args, full) for _ in range(n_layers)]
            self.norm = nn.RMSNorm(size, eps=eps)

        def __call__(self, hidden: Any, embedded: Any, cache: list[Any]) -> Any:
            joined = [self.pre_fc_norm_embedding(embedded), self.pre_fc_norm_hidden(hidden)]
            h = self.fc(mx.concatenate(joined, axis=-1))
            mask = create_attention_mask(h, cache[0])
            for layer, layer_cache in zip(self.layers, cache, strict=True):
                h = layer(h, mask=mask, cache=layer_cache)
            return self.norm(h)

    return Head()


def _sanitized(weights: dict[str, Any], centred: bool, n_experts: int) -> dict[str, Any]:
    """The head's tensors under its own names, as mlx-lm's sanitize treats the model's: norms
    of the original layout centred on zero, experts stacked (or split from a fused gate_up)."""
    import mlx.core as mx

    out: dict[str, Any] = {}
    for key, value in weights.items():
        name = key[len(PREFIX) :]
        if "conv1d.weight" in name and value.shape[-1] != 1:
            value = value.moveaxis(2, 1)
        if centred and value.ndim == 1 and any(name.endswith(s) for s in _CENTRED_NORMS):
            value = value + 1.0
        out[name] = value
    for key in [k for k in out if ".mlp.experts.0." in k]:  # one stacked tensor per projection
        prefix, proj = key.split(".experts.0.")
        parts = [out.pop(f"{prefix}.experts.{e}.{proj}") for e in range(n_experts)]
        out[f"{prefix}.switch_mlp.{proj}"] = mx.stack(parts)
    for key in [k for k in out if k.endswith(".experts.gate_up_proj")]:
        prefix = key[: -len(".experts.gate_up_proj")]
        gate_up = out.pop(key)
        mid = gate_up.shape[-2] // 2
        out[f"{prefix}.switch_mlp.gate_proj.weight"] = gate_up[..., :mid, :]
        out[f"{prefix}.switch_mlp.up_proj.weight"] = gate_up[..., mid:, :]
        out[f"{prefix}.switch_mlp.down_proj.weight"] = out.pop(f"{prefix}.experts.down_proj")
    return out


def load_mtp(model: Any, model_path: str | Path, config: dict) -> MTPHead | None:
    """The checkpoint's MTP head bound to the loaded `model`, at its dtype; None without one."""
    import mlx.core as mx
    import mlx.nn as nn

    if config.get("model_type") not in FAMILIES:
        return None
    files = mtp_files(model_path)
    if not files:
        return None
    weights: dict[str, Any] = {}
    centred = False
    for file in files:
        fmt = _header(file).get("__metadata__", {}).get("format")
        centred = centred or fmt != "mlx"  # the original layout, not one mlx-lm wrote
        for name, value in cast(dict[str, Any], mx.load(str(file))).items():
            if name.startswith(PREFIX):
                weights[name] = value
    text = config.get("text_config") or config
    weights = _sanitized(weights, centred, int(text.get("num_experts") or 0))
    n_layers = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("layers."))
    module = new_head(model, n_layers)
    if quantization := config.get("quantization"):
        nn.quantize(
            module,
            group_size=quantization["group_size"],
            bits=quantization["bits"],
            class_predicate=lambda path, _: f"{path}.scales" in weights,
        )
    module.load_weights(list(weights.items()))
    module.set_dtype(_language(model).model.embed_tokens.weight.dtype)
    mx.eval(module.parameters())
    log.info("MTP head loaded: %d layer(s) from %s", n_layers, ", ".join(f.name for f in files))
    return MTPHead(module, model)


def logits_and_hidden(model: Any, inputs: Any, cache: list[Any]) -> tuple[Any, Any]:
    """The model's logits and its last hidden states (after the final norm, as the MTP head
    reads them) from one forward: the inner model, then the LM head."""
    hidden = _language(model).model(inputs, cache)
    return _lm_head(model)(hidden), hidden
