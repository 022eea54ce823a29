"""The Qwen-VLs' image side: Qwen3-VL's prefill runs mlx-vlm's language model on mlx-lm's own
weights (held once), and an image's token count follows its size."""

from __future__ import annotations

import io

import pytest

from tests.conftest import tiny_vlm


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_vl_moe"])
def test_mlx_vlms_language_model_runs_on_mlx_lms_weights(family):
    from mlx.utils import tree_flatten

    from server.model.loading import load_model

    loaded = load_model(str(tiny_vlm(family)))
    mine = dict(tree_flatten(loaded.model.language_model.parameters()))
    theirs = dict(tree_flatten(loaded.vision.tower.language_model.parameters()))
    assert theirs and all(mine.get(name) is array for name, array in theirs.items())


def test_an_images_tokens_follow_its_size():
    from PIL import Image

    from server.model.loading import load_model

    layout = load_model(str(tiny_vlm("qwen3_vl"))).vision.layout

    def tokens(size: tuple[int, int]) -> int:
        out = io.BytesIO()
        Image.new("RGB", size, (90, 90, 90)).save(out, "PNG")
        text = layout.expansion_for(out.getvalue(), f"{size}")
        assert text.startswith("<|vision_start|>") and text.endswith("<|vision_end|>")
        return text.count("<|image_pad|>")

    assert tokens((320, 192)) == 10 * 6  # 32 px a token: 16 px patches merged 2x2
    assert tokens((192, 320)) == 6 * 10
    assert tokens((4000, 4000)) == 256  # at most 512x512 pixels' worth
