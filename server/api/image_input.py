"""Images a client sends to a vision model: checked here, before anything reaches the model.

Only inline data is taken (Anthropic base64 sources, OpenAI data URLs): a worker that fetched
URLs would let any client make it reach into the network it sits in. A payload that is too
large, not base64, truncated or not an image is a 400 naming its block, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import threading
from collections import OrderedDict

from server.errors import BadRequest
from server.request import ImageInput, image_marker

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Anthropic's own limit per image
MAX_IMAGES = 100  # Anthropic's own limit per request
MAX_PIXELS = 8000 * 8000  # past this, a decompression bomb rather than a screenshot
CHECKED_KEPT = 4096  # digests of images already checked: a session resends its screenshots
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}


class Images:
    """The images of one request, in the order their markers appear in its messages."""

    def __init__(self) -> None:
        self.inputs: list[ImageInput] = []

    def add(self, data: bytes, where: str) -> str:
        """Check `data` is an image and keep it; returns the marker standing for it."""
        if len(self.inputs) >= MAX_IMAGES:
            raise BadRequest(f"{where}: too many images (at most {MAX_IMAGES} per request)")
        digest = hashlib.sha256(data).hexdigest()
        if not _checked(digest):
            check_image(data, where)
            _remember(digest)
        self.inputs.append(ImageInput(data, digest))
        return image_marker(len(self.inputs) - 1)

    def anthropic(self, block: dict, where: str) -> str:
        source = block.get("source")
        if not isinstance(source, dict):
            raise BadRequest(f"{where}: an image block needs a source")
        if source.get("type") != "base64":
            raise BadRequest(
                f"{where}: image source type {source.get('type')!r} is not supported: "
                "send the image inline (source type 'base64')"
            )
        media = source.get("media_type")
        if media not in FORMATS.values():
            raise BadRequest(
                f"{where}: image media_type {media!r} is not one of {sorted(FORMATS.values())}"
            )
        return self.add(_base64(source.get("data"), where), where)

    def openai(self, part: dict, where: str) -> str:
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        if not isinstance(url, str) or not url.startswith("data:"):
            raise BadRequest(
                f"{where}: only data URLs are taken for images (data:image/png;base64,...)",
                param="messages",
            )
        head, _, payload = url.partition(",")
        if not head.endswith(";base64"):
            raise BadRequest(f"{where}: the image data URL must be base64", param="messages")
        return self.add(_base64(payload, where), where)


_CHECKED: OrderedDict[str, None] = OrderedDict()
_CHECKED_LOCK = threading.Lock()


def _checked(digest: str) -> bool:
    with _CHECKED_LOCK:
        if digest in _CHECKED:
            _CHECKED.move_to_end(digest)
            return True
    return False


def _remember(digest: str) -> None:
    with _CHECKED_LOCK:
        _CHECKED[digest] = None
        while len(_CHECKED) > CHECKED_KEPT:
            _CHECKED.popitem(last=False)


def _base64(data: object, where: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise BadRequest(f"{where}: the image has no data")
    # Decoded, the size is about 3/4 of the text: refuse a huge one before decoding it.
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise BadRequest(f"{where}: the image exceeds {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: the image data is not valid base64") from None


def check_image(data: bytes, where: str) -> None:
    """Decode the whole image once: a truncated or foreign payload fails here."""
    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        raise BadRequest(f"{where}: the image exceeds {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in FORMATS:
                raise BadRequest(f"{where}: image format {image.format} is not supported")
            if image.width * image.height > MAX_PIXELS:
                raise BadRequest(f"{where}: the image is too large ({image.width}x{image.height})")
            image.load()
    except BadRequest:
        raise
    except Exception as exc:  # PIL raises many kinds for a bad payload
        raise BadRequest(f"{where}: the image could not be decoded ({exc})") from None
