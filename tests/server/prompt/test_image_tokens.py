"""Image tokens keyed by the image's content: equal images give equal keys, others diverge."""

from __future__ import annotations

import pytest

from server.errors import BadRequest
from server.model.vision import ImageLayout
from server.prompt.image_tokens import KEY_BASE, expand_markers, key_ids, key_images
from server.request import ImageInput, image_marker

LAYOUT = ImageLayout(image_token_id=9, tokens_per_image=3, expansion="<I>", image_processor=None)
A, B = ImageInput(b"a", "aa" * 32), ImageInput(b"b", "bb" * 32)


def test_key_ids_are_the_hash_s_and_lie_above_any_vocabulary():
    assert key_ids(A.digest, 300) == key_ids(A.digest, 300)
    assert key_ids(A.digest, 300)[0] != key_ids(B.digest, 300)[0]
    assert all(KEY_BASE <= i < 2**31 for i in key_ids(A.digest, 300))


def test_markers_expand_in_template_order_and_each_image_keys_its_run():
    text = f"x{image_marker(1)}y{image_marker(0)}"
    expanded, order = expand_markers(text, [A, B], LAYOUT)
    assert expanded == "x<I>y<I>" and order == [B, A]
    keyed, spans = key_images([1, 9, 9, 9, 2, 9, 9, 9, 3], order, LAYOUT, pixels=False)
    assert keyed[1:4] == key_ids(B.digest, 3) and keyed[5:8] == key_ids(A.digest, 3)
    assert [(s.start, s.end, s.digest) for s in spans] == [(1, 4, B.digest), (5, 8, A.digest)]
    assert keyed[0] == 1 and keyed[4] == 2 and keyed[8] == 3


def test_an_image_token_typed_in_the_text_is_a_400():
    _, order = expand_markers(image_marker(0), [A], LAYOUT)
    with pytest.raises(BadRequest, match="image sequences"):
        key_images([9, 9, 9, 5, 9], order, LAYOUT, pixels=False)


def test_a_marker_used_twice_is_a_400():
    with pytest.raises(BadRequest, match="reserved for images"):
        expand_markers(image_marker(0) * 2, [A], LAYOUT)
