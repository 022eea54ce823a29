"""The image side of a vision model (real tiny Gemma 3 VLMs): features and the merged rows."""

from __future__ import annotations

import io

import pytest

from tests.conftest import tiny_vlm


def png(color: tuple[int, int, int], size=(320, 200)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    "tower", [{}, {"image_size": 448, "vision_hidden": 64, "vision_layers": 2}]
)
def test_an_images_rows_stand_where_its_tokens_are_and_text_keeps_its_own(tower):
    import mlx.core as mx

    from server.model.loading import load_model
    from server.model.vision import ImageSpan, text_embeddings

    loaded = load_model(str(tiny_vlm(**tower)))
    vision = loaded.vision
    assert vision is not None and vision.layout.tokens_per_image == 256
    pixels = vision.layout.pixels(png((200, 30, 30)), "red")
    assert pixels["pixel_values"].shape[-1] == (tower.get("image_size") or 224)
    span = ImageSpan(3, 259, "red", pixels)
    tokens = [5, 6, 7] + [1 << 30] * 256 + [8, 9]  # image positions hold key ids
    rows = vision.chunk_embeddings(loaded.model, tokens, [span], 0, len(tokens))
    features = vision.features(span)
    assert rows.shape == (261, features.shape[-1]) and features.shape[0] == 256
    text = text_embeddings(loaded.model)(mx.array([5, 6, 7, 8, 9]))
    assert mx.allclose(rows[:3], text[:3]).item() and mx.allclose(rows[259:], text[3:]).item()
    assert mx.allclose(rows[3:259], features).item()
    # A chunk that starts inside the image takes the rest of its rows.
    tail = vision.chunk_embeddings(loaded.model, tokens, [span], 100, 261)
    assert mx.allclose(tail[:159], features[97:]).item()
    assert vision.chunk_embeddings(loaded.model, tokens, [span], 259, 261) is None
    other = vision.features(
        ImageSpan(3, 259, "blue", vision.layout.pixels(png((30, 30, 200)), "b"))
    )
    assert not mx.allclose(other, features).item()  # another image, other rows


def test_a_family_with_no_known_layout_serves_text_and_the_log_says_why(caplog):
    from server.model.loading import load_model
    from server.model.vision import load_vision

    path = str(tiny_vlm("qwen3_vl"))
    loaded = load_model(path)
    config = {**loaded.config, "model_type": "llava"}  # read the Gemma 3 way: no layout
    with caplog.at_level("WARNING"):
        assert load_vision(path, loaded.model, config, float32=True) is None
    assert "images not read, the model serves text (no image layout known for llava" in (
        caplog.text
    )
