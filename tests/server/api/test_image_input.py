"""Image payloads are checked before anything reaches the model: each bad one a clear 400."""

from __future__ import annotations

import base64
import io

import pytest

from server.api import image_input
from server.api.image_input import Images
from server.errors import BadRequest


def png(size=(8, 8)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def block(data: bytes, media_type: str = "image/png") -> dict:
    source = {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()}
    return {"type": "image", "source": source}


def test_an_image_becomes_a_marker_and_keeps_its_digest():
    images = Images()
    assert images.anthropic(block(png()), "m[0]") == "<mlxctl-image-0>"
    assert images.openai({"image_url": "data:image/png;base64," + base64.b64encode(png()).decode()},
                         "m[1]") == "<mlxctl-image-1>"  # fmt: skip
    assert images.inputs[0].digest == images.inputs[1].digest  # the same bytes


@pytest.mark.parametrize(
    ("part", "says"),
    [
        (block(png(), "image/bmp"), "media_type 'image/bmp'"),
        ({"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}, "inline"),
        (
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"},
            },
            "not valid base64",
        ),  # fmt: skip
        (block(png()[:40]), "could not be decoded"),
    ],
)
def test_a_bad_anthropic_image_is_a_400_naming_the_block(part, says):
    with pytest.raises(BadRequest, match=says) as refused:
        Images().anthropic(part, "messages[2].content[0]")
    assert refused.value.message.startswith("messages[2].content[0]: ")


def test_too_many_images_is_a_400(monkeypatch):
    monkeypatch.setattr(image_input, "MAX_IMAGES", 2)
    images = Images()
    images.add(png(), "a")
    images.add(png(), "b")
    with pytest.raises(BadRequest, match="too many images"):
        images.add(png(), "c")


def test_an_image_checked_once_is_not_decoded_again(monkeypatch):
    data = png((9, 9))
    Images().add(data, "first")
    monkeypatch.setattr(image_input, "check_image", lambda *a: pytest.fail("decoded again"))
    Images().add(data, "again")
