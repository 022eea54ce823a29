"""A draft model for speculative decoding: checked to share the target's tokenizer before the
worker starts (its token ids are proposed as the target's), loaded after the target through the
same loader."""

from __future__ import annotations

from typing import Any, cast

from server.model.loading import LoadedModel, load_model

# Strings whose ids must agree: code, prose, a leading space, non-ASCII and an emoji.
PROBES = ("def main():\n    return 0\n", "Hello, world! The end.", " the", "ünïcödé 😀 日本語")


def tokenizer_mismatch(target: Any, draft: Any) -> str | None:
    """Why `draft` (a tokenizer) cannot draft for `target`; None when they agree."""
    sizes = len(target.get_vocab()), len(draft.get_vocab())
    if sizes[0] != sizes[1]:
        return f"vocabulary of {sizes[1]} tokens, the model's has {sizes[0]}"
    for probe in PROBES:
        if target.encode(probe) != draft.encode(probe):
            return f"it splits {probe!r} into other token ids"
    return None


def check_draft(model_path: str, draft_path: str) -> str | None:
    """Compare the two tokenizers only (no weights), so a mismatch stops the worker at once."""
    from mlx_lm.utils import load_tokenizer

    return tokenizer_mismatch(load_tokenizer(model_path), load_tokenizer(draft_path))


def weight_bytes(model: Any) -> int:
    """A model's weight bytes (decoding reads every weight once a token)."""
    from mlx.utils import tree_flatten

    weights = cast(list[tuple[str, Any]], tree_flatten(model.parameters()))
    return max(1, sum(v.nbytes for _, v in weights))


def weight_ratio(draft: Any, target: Any) -> float:
    """The draft's weight bytes over the target's: a draft forward's cost over a target one's
    before any is measured."""
    return weight_bytes(draft) / weight_bytes(target)


def load_draft(path: str, target: LoadedModel) -> LoadedModel:
    """The draft model, prepared as the target is (dtype on CPU, warm-up); its tokenizer checked
    again against the loaded target's."""
    draft = load_model(path)
    why = tokenizer_mismatch(target.tokenizer, draft.tokenizer)
    if why:
        raise ValueError(f"draft model {path} does not share the model's tokenizer: {why}")
    return draft
