"""A vision-language model's image side, loaded through mlx-vlm beside mlx-lm's language model.

mlx-lm runs the language model (batching, caches, decode: unchanged); mlx-vlm supplies the
vision tower, its projector and the processor. The prefill of a chunk that holds image tokens
feeds the language model merged embeddings instead of token ids (`chunk_embeddings`).
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Families whose image tokens we lay out: Gemma 3's here, the Qwen-VLs' in vision_mrope.
KNOWN_LAYOUTS = ("gemma3", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", "qwen2_5_vl")
FEATURES_KEPT = 16  # images whose features stay on hand (a prefill chunked across one)
PIXELS_KEPT = 32  # images whose pixels stay on hand: a session resends its screenshots each turn


@dataclass(frozen=True)
class ImageSpan:
    """One image in a rendered prompt: its tokens [start, end), its processor's output (numpy
    `pixel_values`, and `image_grid_thw` where the layout has a grid) and its (t, h, w) grid."""

    start: int
    end: int
    digest: str
    pixels: Any = field(compare=False, repr=False)
    grid: tuple[int, int, int] | None = None


@dataclass
class ImageLayout:
    """What the prompt side needs (no MLX): how an image's tokens look and its pixels."""

    image_token_id: int
    tokens_per_image: int
    expansion: str  # the text standing for one image (its tokens between the markers)
    image_processor: Any
    _kept: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def expansion_for(self, data: bytes, digest: str) -> str:
        """The text standing for this image (a layout whose count follows its size reads it)."""
        return self.expansion

    def grid(self, pixels: dict) -> tuple[int, int, int] | None:
        return None

    def pixels(self, data: bytes, digest: str) -> dict:
        """The processor's output for an image (numpy), kept by digest: processing a 1080p
        screenshot takes ~0.2 s, which every later turn resending it would pay again."""
        from PIL import Image

        with self._lock:
            if (hit := self._kept.get(digest)) is not None:
                self._kept.move_to_end(digest)
                return hit
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
        pixels = dict(self.image_processor(images=[rgb], return_tensors="np"))
        with self._lock:
            self._kept[digest] = pixels
            while len(self._kept) > PIXELS_KEPT:
                self._kept.popitem(last=False)
        return pixels


@dataclass
class Vision:
    layout: ImageLayout
    tower: Any  # the mlx-vlm model; only its vision parts are ever evaluated
    _features: OrderedDict = field(default_factory=OrderedDict)

    def features(self, span: ImageSpan) -> Any:
        """The image's embeddings, one row per image token (generation thread only)."""
        import mlx.core as mx

        if (hit := self._features.get(span.digest)) is not None:
            self._features.move_to_end(span.digest)
            return hit
        n = span.end - span.start
        ids = mx.full((1, n), self.layout.image_token_id, dtype=mx.int32)
        out = self.tower.get_input_embeddings(
            input_ids=ids, pixel_values=mx.array(span.pixels["pixel_values"]), mask=mx.ones((1, n))
        )
        rows = out.inputs_embeds[0]
        mx.eval(rows)
        self._features[span.digest] = rows
        while len(self._features) > FEATURES_KEPT:
            self._features.popitem(last=False)
        return rows

    def run_chunk(
        self,
        model: Any,
        cache: list[Any],
        tokens: list[int],
        spans: list[ImageSpan],
        pos: int,
        end: int,
    ) -> bool:
        """Run tokens[pos:end] into `cache` with image rows where images are; False when the
        chunk holds none (plain token ids serve)."""
        import mlx.core as mx

        rows = self.chunk_embeddings(model, tokens, spans, pos, end)
        if rows is None:
            return False
        model(mx.array(tokens[pos:end])[None], cache=cache, input_embeddings=rows[None])
        return True

    def place(self, cache: list[Any], spans: list[ImageSpan]) -> list[Any]:
        """The cache a prompt with `spans` decodes on (Gemma 3's positions are plain)."""
        return cache

    def chunk_embeddings(
        self, model: Any, tokens: list[int], spans: list[ImageSpan], pos: int, end: int
    ) -> Any:
        """The language model's input for tokens[pos:end], with image rows where images are
        (None when the chunk holds no image: plain token ids serve)."""
        import mlx.core as mx

        inside = [s for s in spans if s.start < end and s.end > pos]
        if not inside:
            return None
        # Image positions hold cache-key ids, not vocabulary ids: embed a stand-in there.
        ids = list(tokens[pos:end])
        for s in inside:
            for i in range(max(s.start, pos), min(s.end, end)):
                ids[i - pos] = 0
        rows = text_embeddings(model)(mx.array(ids))
        for s in inside:
            a, b = max(s.start, pos), min(s.end, end)
            image = self.features(s)[a - s.start : b - s.start].astype(rows.dtype)
            rows = mx.concatenate([rows[: a - pos], image, rows[b - pos :]])
        return rows


def text_embeddings(model: Any) -> Any:
    """The language model's token embedding (mlx-lm's multimodal wrappers nest it)."""
    inner = getattr(model, "language_model", model)
    return inner.model.embed_tokens


def load_vision(path: str, model: Any, config: dict, float32: bool) -> Vision | None:
    """The image side of `path` when its config is a vision-language one mlx-vlm knows and
    whose image tokens it lays out as Gemma 3's processor does (None: the model reads text)."""
    if not config.get("vision_config"):
        return None
    try:
        import mlx.core as mx
        from mlx_vlm.utils import get_model_path, load_model, load_processor

        local = Path(get_model_path(path))
        processor = load_processor(local, add_detokenizer=False)
        expansion = getattr(processor, "full_image_sequence", None)
        if expansion is None or not hasattr(processor, "image_token_id"):
            family = config.get("model_type")
            log.warning(
                "%s: images not read, the model serves text (no image layout known for %s; "
                "known: %s)",
                path,
                family,
                ", ".join(KNOWN_LAYOUTS),
            )
            return None
        # Lazy: the language weights stay on disk; mlx-lm's copy embeds the text.
        tower = load_model(local, lazy=True)
        tower.language_model.model.embed_tokens = text_embeddings(model)
        for name in ("vision_tower", "multi_modal_projector"):
            part = getattr(tower, name, None)
            if part is not None:
                if float32:
                    part.set_dtype(mx.float32)
                mx.eval(part.parameters())
    except Exception as exc:  # an architecture mlx-vlm lacks: the model still serves text
        log.warning("%s: images not read (mlx-vlm could not load its vision side: %s)", path, exc)
        return None
    layout = ImageLayout(
        # The config's id first: what the model was trained on (a processor may say otherwise).
        image_token_id=int(config.get("image_token_index") or processor.image_token_id),
        tokens_per_image=int(getattr(processor, "image_seq_length", 0) or 0),
        expansion=expansion,
        image_processor=processor.image_processor,
    )
    return Vision(layout, tower)
