"""Images in a rendered prompt: their markers become image tokens, keyed by the image's content.

Every image token of an image takes an id derived from the image's sha256 (as vLLM keys its
multimodal hashes), far above any vocabulary: the prefix cache, its disk tier and the request
ring key on token ids alone, so a resent screenshot matches up to the new turn and a different
image at the same place diverges at its first token. The prefill embeds those positions from
the image itself (server.model.vision), never from these ids.
"""

from __future__ import annotations

import hashlib
import re

from server.errors import BadRequest
from server.model.vision import ImageLayout, ImageSpan
from server.request import ImageInput

KEY_BASE = 1 << 30  # above every vocabulary; below 2**31, as stored tokens are int32
_WORDS = range(0, 32, 4)  # a sha256 as eight 32-bit words, kept to 30 bits each
_MARKER = re.compile(r"<mlxctl-image-(\d+)>")


def expand_markers(text: str, images: list[ImageInput], layout: ImageLayout) -> tuple[str, list]:
    """`text` with each image marker replaced by the model's image sequence, and the images
    in the order the template placed them (a template may leave a message out)."""
    order: list[ImageInput] = []
    seen: set[int] = set()

    def expand(match: re.Match) -> str:
        n = int(match.group(1))
        if n >= len(images) or n in seen:
            raise BadRequest(f"the text {match.group(0)!r} is reserved for images")
        seen.add(n)
        order.append(images[n])
        return layout.expansion_for(images[n].data, images[n].digest)

    return _MARKER.sub(expand, text), order


def key_ids(digest: str, n: int) -> list[int]:
    """`n` cache-key ids for an image: 30 bits each from a stream of its hash."""
    out: list[int] = []
    block = 0
    while len(out) < n:
        words = hashlib.sha256(f"{digest}:{block}".encode()).digest()
        out += [KEY_BASE + (int.from_bytes(words[i : i + 4], "little") >> 2) for i in _WORDS]
        block += 1
    return out[:n]


def key_images(
    tokens: list[int], order: list[ImageInput], layout: ImageLayout, *, pixels: bool
) -> tuple[list[int], list[ImageSpan]]:
    """The prompt's ids with each image's run of image tokens replaced by its key ids, and the
    images' spans (with their pixels when `pixels`: a token count needs none)."""
    runs = _runs(tokens, layout.image_token_id)
    if len(runs) != len(order):
        raise BadRequest(
            f"the prompt holds {len(runs)} image sequences for {len(order)} images "
            "(is an image token written in the text?)"
        )
    keyed = list(tokens)
    spans = []
    for (start, end), image in zip(runs, order, strict=True):
        keyed[start:end] = key_ids(image.digest, end - start)
        data = layout.pixels(image.data, image.digest) if pixels else None
        grid = layout.grid(data) if data is not None else None
        spans.append(ImageSpan(start, end, image.digest, data, grid))
    return keyed, spans


def _runs(tokens: list[int], image_id: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    i, n = 0, len(tokens)
    while i < n:
        if tokens[i] == image_id:
            j = i
            while j < n and tokens[j] == image_id:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs
