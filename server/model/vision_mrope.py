"""Qwen3-VL's and Qwen3.5's image side: images of any size at M-RoPE positions.

An image's token count follows its size (the processor's (t, h, w) grid of patches, merged 2x2).
Every chunk of a prompt with images prefills at explicit 3-D positions, on the request's own KV
cache. Qwen3-VL's run through mlx-vlm's own language model, on mlx-lm's weights (shared, not
copied), which adds the tower's deepstack features after the first layers where images are.
Qwen3.5's (no deepstack; mlx-vlm's model keeps cache kinds of its own for the linear-attention
layers) run through mlx-lm's model, its RoPE given the chunk's positions. Decode stays on mlx-lm's
model, its RoPE shifted by the sequence's delta (server.model.mrope).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.model.vision import FEATURES_KEPT, ImageLayout, ImageSpan, Vision, text_embeddings

log = logging.getLogger(__name__)

# mlx-lm's text models for these take plain RoPE: images need their positions given.
MROPE_FAMILIES = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "qwen2_5_vl")
ON_MLX_LM = ("qwen3_5", "qwen3_5_moe", "qwen2_5_vl")  # their image chunks prefill on mlx-lm's


@dataclass
class GridLayout(ImageLayout):
    """Qwen's layout: <|vision_start|>, one <|image_pad|> per merged patch, <|vision_end|>."""

    merge: int = 2
    start_text: str = ""
    image_text: str = ""
    end_text: str = ""

    def expansion_for(self, data: bytes, digest: str) -> str:
        t, h, w = self.grid(self.pixels(data, digest))
        n = t * h * w // (self.merge * self.merge)
        return self.start_text + self.image_text * n + self.end_text

    def grid(self, pixels: dict) -> tuple[int, int, int]:
        t, h, w = (int(v) for v in pixels["image_grid_thw"][0])
        return t, h, w


@dataclass
class MRopeVision(Vision):
    merge: int = 2
    on_mlx_lm: bool = False  # image chunks run on mlx-lm's model (else mlx-vlm's, deepstack)

    def features(self, span: ImageSpan) -> Any:
        """(rows, deepstack rows per layer) of an image, one row per image token."""
        import mlx.core as mx

        if (hit := self._features.get(span.digest)) is not None:
            self._features.move_to_end(span.digest)
            return hit
        tower = self.tower.vision_tower
        dtype = tower.patch_embed.proj.weight.dtype
        pixels = mx.array(span.pixels["pixel_values"]).astype(dtype)
        rows = tower(pixels, mx.array(span.pixels["image_grid_thw"]))
        # Qwen3-VL's tower gives its deepstack layers too (Qwen3.5's none; Qwen2.5-VL's rows only).
        rows, deep = rows if isinstance(rows, tuple) else (rows, [])
        out = (rows, list(deep or []))
        mx.eval(out)
        self._features[span.digest] = out
        while len(self._features) > FEATURES_KEPT:
            self._features.popitem(last=False)
        return out

    def run_chunk(
        self,
        model: Any,
        cache: list[Any],
        tokens: list[int],
        spans: list[ImageSpan],
        pos: int,
        end: int,
    ) -> bool:
        """Run tokens[pos:end] of a prompt with images at their M-RoPE positions (every chunk:
        text between images sits at its own delta)."""
        import mlx.core as mx
        import numpy as np

        from server.model.mrope import positions

        if not spans:
            return False
        ids = list(tokens[pos:end])
        inside = [s for s in spans if s.start < end and s.end > pos]
        for s in inside:  # image positions hold cache-key ids: embed a stand-in there
            ids[max(s.start, pos) - pos : min(s.end, end) - pos] = [0] * (
                min(s.end, end) - max(s.start, pos)
            )
        rows = text_embeddings(model)(mx.array(ids))
        visual = np.zeros(end - pos, dtype=bool)
        deep: list[list[Any]] = []
        for s in inside:
            a, b = max(s.start, pos), min(s.end, end)
            image, layers = self.features(s)
            rows[a - pos : b - pos] = image[a - s.start : b - s.start].astype(rows.dtype)
            visual[a - pos : b - pos] = True
            deep = deep or [[] for _ in layers]
            for parts, layer in zip(deep, layers, strict=True):
                parts.append(layer[a - s.start : b - s.start].astype(rows.dtype))
        where = mx.array(positions(spans, self.merge, pos, end))[:, None, :]
        if self.on_mlx_lm:
            return _run_on_mlx_lm(model, cache, ids, rows, where)
        extra: dict[str, Any] = {}
        if deep:  # Qwen3-VL's tower feeds its first layers too (Qwen3.5's does not)
            extra["visual_pos_masks"] = mx.array(visual)[None]
            extra["deepstack_visual_embeds"] = [mx.concatenate(p) for p in deep]
        self.tower.language_model.model(
            mx.array(ids)[None], inputs_embeds=rows[None], cache=cache, position_ids=where, **extra
        )
        return True

    def place(self, cache: list[Any], spans: list[ImageSpan]) -> list[Any]:
        """The cache carrying the delta the prompt's images leave for decode."""
        from server.model.mrope import positioned, rope_delta

        return positioned(cache, rope_delta(spans, self.merge)) if spans else cache


def _run_on_mlx_lm(model: Any, cache: list[Any], ids: list[int], rows: Any, where: Any) -> bool:
    """A chunk through mlx-lm's model, its positioned layers' RoPE at `where` meanwhile."""
    import mlx.core as mx

    from server.model.mrope import PositionedKVCache

    layers = [c for c in cache if isinstance(c, PositionedKVCache)]
    assert layers, "a prompt with images prefills on a cache placed for them (Vision.place)"
    for c in layers:
        c.chunk_positions = where
    try:
        model(mx.array(ids)[None], cache=cache, input_embeddings=rows[None])
    finally:
        for c in layers:
            c.chunk_positions = None
    return True


def load_mrope_vision(path: str, model: Any, config: dict, float32: bool) -> MRopeVision | None:
    """The image side of a Qwen3-VL or Qwen3.5 for mlx-lm's `model` (None: mlx-vlm could not
    load it; the model serves text)."""
    try:
        import mlx.core as mx
        from mlx.utils import tree_flatten
        from mlx_lm.utils import dequantize_model
        from mlx_vlm.utils import get_model_path, load_model, load_processor

        from server.model.mrope import install_shifted_rope

        local = Path(get_model_path(path))
        tower = load_model(local, lazy=True)  # first: it registers the family's processor
        processor: Any = load_processor(local, add_detokenizer=False)
        language = tower.language_model
        on_mlx_lm = config.get("model_type") in ON_MLX_LM
        if not on_mlx_lm:
            if float32 and "quantization" in config:  # mlx-lm's copy was expanded: match it
                dequantize_model(language)
            # mlx-lm's arrays, not copies: the language weights are held once.
            language.load_weights(tree_flatten(model.language_model.parameters()), strict=False)
        if float32:
            tower.vision_tower.set_dtype(mx.float32)
        mx.eval(tower.vision_tower.parameters())
        mrope = next(
            layer.self_attn.rotary_emb
            for layer in language.model.layers
            if hasattr(layer, "self_attn")
        )
        install_shifted_rope(model.language_model.model, mrope if on_mlx_lm else None)
    except Exception as exc:  # an architecture mlx-vlm lacks: the model still serves text
        log.warning("%s: images not read (mlx-vlm could not load its vision side: %s)", path, exc)
        return None
    merge = int(tower.config.vision_config.spatial_merge_size)
    layout = GridLayout(
        image_token_id=int(config.get("image_token_id") or processor.image_token_id),
        tokens_per_image=0,  # follows each image's size
        expansion="",
        image_processor=processor.image_processor,
        merge=merge,
        start_text=_token_text(processor, config, "vision_start"),
        image_text=_token_text(processor, config, "image"),
        end_text=_token_text(processor, config, "vision_end"),
    )
    return MRopeVision(layout, tower, OrderedDict(), merge=merge, on_mlx_lm=on_mlx_lm)


def _token_text(processor: Any, config: dict, name: str) -> str:
    """A vision token's text: the processor's, else the tokenizer's for the config's id."""
    text = getattr(processor, f"{name}_token", None)
    if text is None:
        text = processor.tokenizer.convert_ids_to_tokens(int(config[f"{name}_token_id"]))
    return str(text)
