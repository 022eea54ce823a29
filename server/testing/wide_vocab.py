"""A tiny random-weight model with a ~151K-token vocabulary (Qwen2's size), built offline.

The tiny model's trained byte-level BPE, padded with the most frequent words and symbol runs of
Python's own sources (each with and without a leading space) until the vocabulary has
`vocab_size` tokens. Realistic for what a token mask costs (many tokens, shared prefixes); the
network stays tiny, so its decode speed is a worst case for any per-token overhead.
"""

from __future__ import annotations

import json
import re
import sysconfig
from collections import Counter
from pathlib import Path

from server.testing.staging import staged

QWEN2_VOCAB = 151_646


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-to-unicode map (what byte-level BPE vocabularies are written in)."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    visible += range(ord("®"), ord("ÿ") + 1)
    out, extra = {b: chr(b) for b in visible}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def wide_tokenizer_json(vocab_size: int = QWEN2_VOCAB) -> str:
    """tokenizer.json text: the tiny model's BPE plus stdlib words up to `vocab_size` tokens."""
    from server.testing.tiny_model import train_tokenizer

    data = json.loads(train_tokenizer(8192).to_str())
    added = data["added_tokens"]
    vocab = {
        k: v for k, v in data["model"]["vocab"].items() if k not in {t["content"] for t in added}
    }
    alphabet = _byte_alphabet()
    words: Counter[str] = Counter()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            words.update(re.findall(r"\w+|[^\w\s]{2,4}", path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue
    want = vocab_size - len(added)
    for word, _ in words.most_common():
        for form in (" " + word, word):
            piece = "".join(alphabet[b] for b in form.encode())
            vocab.setdefault(piece, len(vocab))
        if len(vocab) >= want:
            break
    ordered = sorted(vocab, key=vocab.__getitem__)[:want]
    data["model"]["vocab"] = {piece: i for i, piece in enumerate(ordered)}
    for i, token in enumerate(added):
        token["id"] = len(ordered) + i
        data["model"]["vocab"][token["content"]] = token["id"]
    return json.dumps(data)


def build_wide_model(destination: Path, vocab_size: int = QWEN2_VOCAB, seed: int = 0) -> Path:
    """A tiny qwen2 model (2 layers, hidden 64) on the wide tokenizer, at `destination`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes
    from tokenizers import Tokenizer

    from server.testing.tiny_families import model_config
    from server.testing.tiny_model import CHAT_TEMPLATE

    destination = Path(destination)
    if (destination / "config.json").exists():
        return destination
    text = wide_tokenizer_json(vocab_size)
    tokenizer = Tokenizer.from_str(text)
    eos = tokenizer.token_to_id("<|im_end|>")
    assert eos is not None, "the tiny model's added tokens include <|im_end|>"
    config = model_config(tokenizer.get_vocab_size(), 2, 64, 32768, eos, "qwen2", 64)
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    with staged(destination) as staging:
        mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "tokenizer.json").write_text(text)
        tokenizer_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "add_bos_token": False,
            "model_max_length": 32768,
            "chat_template": CHAT_TEMPLATE,
        }
        (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return destination
