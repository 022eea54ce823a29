"""Tiny random-weight models of a real mlx-lm architecture, for tests and benchmarks.

The model is a real `qwen2` network (so mlx-lm loads, caches and generates with it like any other)
with a real byte-level BPE tokenizer trained on Python's own sources and a Hermes/Qwen-style chat
template that renders tools and `<tool_call>` blocks. Same arguments, same files.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from server.testing.staging import staged
from server.testing.tiny_families import model_config

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Not special: they must survive decoding so the tool parser can see them.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
# Fixed corpus: stdlib modules with plenty of English docstrings, JSON-ish text and code.
_CORPUS_MODULES = [
    "json/__init__.py",
    "json/decoder.py",
    "argparse.py",
    "textwrap.py",
    "pathlib.py",
    "subprocess.py",
    "http/server.py",
    "shutil.py",
    "tempfile.py",
    "logging/__init__.py",
    "difflib.py",
    "string.py",
    "csv.py",
    "inspect.py",
    "typing.py",
]

CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content }}{%- else %}\
{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, \
"arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls or [] %}
{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}
{{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}\
{{- tool_call.arguments | tojson }}{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\
{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\
{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""


# Qwen3-Coder style calls (mlx-lm picks its `qwen3_coder` parser from this template).
_JSON_CALL = CHAT_TEMPLATE[
    CHAT_TEMPLATE.index('{{- \'\\n<tool_call>\\n{"name"') : CHAT_TEMPLATE.index("</tool_call>' }}")
    + len("</tool_call>' }}")
]
_XML_CALL = (
    "{{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}"
    "{%- for key, value in tool_call.arguments.items() %}"
    "{{- '<parameter=' + key + '>\\n' }}"
    "{%- if value is string %}{{- value }}{%- else %}{{- value | tojson }}{%- endif %}"
    "{{- '\\n</parameter>\\n' }}{%- endfor %}{{- '</function>\\n</tool_call>' }}"
)
CHAT_TEMPLATE_XML = CHAT_TEMPLATE.replace(_JSON_CALL, _XML_CALL)


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for name in _CORPUS_MODULES:
        path = stdlib / name
        if path.exists():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return texts


def train_tokenizer(vocab_size: int = 8192, extra_tokens: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer (`tokenizers.Tokenizer`) trained on a fixed stdlib corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + TOOL_TOKENS + list(extra_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def tokenizer_config(context: int, chat_template: str, **extra: object) -> dict:
    """`tokenizer_config.json` for the ChatML tokenizer `train_tokenizer` writes (every tiny
    builder's), with `extra` keys (a VLM's image tokens)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        **extra,
        "chat_template": chat_template,
    }


def build_tiny_model(
    destination: Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    context: int = 32768,
    vocab_size: int = 8192,
    seed: int = 0,
    scripted: bool = False,
    tool_format: str = "json",
    family: str = "qwen2",
    window: int = 64,
    template: str = "hermes",
    mtp: bool = False,
) -> Path:
    """Write a tiny random-weight qwen2 model directory at `destination` and return it.

    Weights come from `mx.random.seed(seed)`; the tokenizer from a fixed corpus; so equal
    arguments give the same model. Written to a staging folder and renamed into place.
    `scripted=True` then overfits it on SCRIPT, so greedy decoding of those prompts gives
    those exact replies (real tool-call text from a real model, for end-to-end tests).
    `tool_format="xml"` writes Qwen3-Coder style calls instead of Hermes JSON ones.
    `family` picks the network: qwen2, or the untrimmable-cache kinds qwen3_next and qwen3_5
    (hybrids) and gemma3_text (sliding window of `window` tokens); all share the tokenizer and
    template.
    `template` names a thinking family's (server.testing.thinking_templates) instead of Hermes.
    `mtp=True` (qwen3_next, qwen3_5) adds a random MTP head, `mtp.*` in `mtp.safetensors`.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    from server.testing import thinking_templates
    from server.testing.scripts import script

    destination = Path(destination)
    if (destination / "config.json").exists():
        return destination
    spec = None if template == "hermes" else thinking_templates.TEMPLATES[template]
    hermes = CHAT_TEMPLATE_XML if tool_format == "xml" else CHAT_TEMPLATE
    tokenizer = train_tokenizer(vocab_size, spec.tokens if spec else ())
    eos_id = tokenizer.token_to_id("<|im_end|>")
    config = model_config(
        tokenizer.get_vocab_size(), layers, hidden, context, eos_id, family, window
    )
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)

    if mtp and family not in ("qwen3_next", "qwen3_5"):
        raise ValueError("tiny MTP heads are built for the qwen3_next and qwen3_5 families")
    with staged(destination) as staging:
        mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
        if mtp:
            save_mtp_head(staging / "mtp.safetensors", model)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save(str(staging / "tokenizer.json"))
        config = tokenizer_config(context, spec.text if spec else hermes)
        (staging / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        if scripted:
            pairs = thinking_templates.thinking_script(template) if spec else script(tool_format)
            train_on_script(model, staging, pairs)
            weights = dict(tree_flatten(model.parameters()))
            mx.save_safetensors(
                str(staging / "model.safetensors"), weights, metadata={"format": "mlx"}
            )
    return destination


def save_mtp_head(path: Path, model) -> None:
    """Random `mtp.*` weights for `model` (a qwen3_next or qwen3_5), as mlx-lm writes weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from server.model.mtp import new_head

    head = dict(tree_flatten(new_head(model, 1).parameters()))
    mx.eval(head)
    tensors = {f"mtp.{name}": value for name, value in head.items()}
    mx.save_safetensors(str(path), tensors, metadata={"format": "mlx"})


def train_on_script(
    model,
    model_dir: Path,
    pairs=None,
    steps: int = 600,
    learning_rate: float = 3e-3,
    target_loss: float = 0.02,
) -> float:
    """Overfit `model` on `pairs` (default SCRIPT), loss on reply tokens; returns the loss."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.utils import load_tokenizer

    from server.testing.scripts import SCRIPT

    tokenizer = load_tokenizer(model_dir)
    rows = []
    for messages, tools, reply, *options in pairs or SCRIPT:  # options: template kwargs
        kwargs = {"tools": tools, **dict(*options)} if tools else dict(*options)
        prompt = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **kwargs
        )
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        out = tokenizer.encode(reply, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append((ids + out, len(ids)))
    width = max(len(r) for r, _ in rows)
    tokens = mx.array([r + [0] * (width - len(r)) for r, _ in rows])
    # Only reply positions need logits: gather them before the (large) vocabulary projection.
    span = max(len(r) - start for r, start in rows)
    positions = [[min(start - 1 + i, width - 2) for i in range(span)] for r, start in rows]
    where = mx.array(positions)
    targets = mx.take_along_axis(tokens, where + 1, axis=1)
    mask = mx.array(
        [[1.0 if start + i < len(r) else 0.0 for i in range(span)] for r, start in rows]
    )

    def loss_fn(model):
        hidden = model.model(tokens[:, :-1])
        hidden = mx.take_along_axis(hidden, where[..., None], axis=1)
        logits = model.model.embed_tokens.as_linear(hidden)
        losses = nn.losses.cross_entropy(logits, targets, reduction="none")
        return (losses * mask).sum() / mask.sum(), logits

    optimizer = optim.Adam(learning_rate=learning_rate)
    step = nn.value_and_grad(model, loss_fn)
    loss = None
    for _ in range(steps):
        (loss, logits), grads = step(model)
        # Done once every reply token is the argmax by a clear margin (low loss), checked on
        # the weights we keep (before this step's update), so greedy decoding replays the script.
        wrong = ((logits.argmax(-1) != targets) * mask).sum()
        mx.eval(loss, wrong)
        if wrong.item() == 0 and loss.item() < target_loss:
            break
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
    if loss is None:
        raise ValueError(f"steps={steps}: training takes at least one step")
    return float(loss)
