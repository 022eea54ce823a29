"""Fixtures of the prefix store's tests: the tiny model, and one prompt's cold cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    from server.model.loading import load_model

    return load_model(str(tiny_model_path))


@pytest.fixture(scope="module")
def model(loaded):
    return loaded.model


@pytest.fixture(scope="module")
def base(model):
    """A 600-token prompt, its cold cache and logits."""
    from tests.server.prefix_cache.store_helpers import cold, rand_tokens

    tokens = rand_tokens(600, 0)
    cache, logits = cold(model, tokens)
    return tokens, cache, logits
