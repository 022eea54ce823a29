"""Model import, registry and pull: GGUF conversion checked against a real llama network."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlxctl.errors import ModelError, UnsupportedModelError
from mlxctl.models import registry
from mlxctl.models.gguf_import import import_gguf

HEADS, KV_HEADS, HIDDEN, LAYERS = 4, 2, 64, 2


def llama_cpp_permute(weights, n_heads):
    """llama.cpp's convert script interleaves q/k rows like this for its rope layout."""
    return (
        weights.reshape(n_heads, 2, weights.shape[0] // n_heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _gguf_names():
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for layer in range(LAYERS):
        for mlx_part, gguf_part in parts.items():
            names[f"model.layers.{layer}.{mlx_part}.weight"] = f"blk.{layer}.{gguf_part}.weight"
    return names


@pytest.fixture(scope="module")
def llama_gguf(tmp_path_factory):
    """A tiny random llama model written as llama.cpp would (F32, permuted q/k) plus the model."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    from server.testing.tiny_model import CHAT_TEMPLATE, train_tokenizer

    tokenizer = train_tokenizer(1024)
    vocab = tokenizer.get_vocab_size()
    tokens = [tokenizer.id_to_token(i) for i in range(vocab)]
    merges = [" ".join(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]]
    config = {
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "intermediate_size": 128,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    model_class, args_class = _get_classes(config)
    mx.random.seed(3)
    model = model_class(args_class.from_dict(config))
    reference = dict(tree_flatten(model.parameters()))
    arrays = {}
    for mlx_name, gguf_name in _gguf_names().items():
        array = reference[mlx_name]
        if ".q_proj." in mlx_name:
            array = llama_cpp_permute(array, HEADS)
        elif ".k_proj." in mlx_name:
            array = llama_cpp_permute(array, KV_HEADS)
        arrays[gguf_name] = array
    u32 = lambda v: mx.array(v, dtype=mx.uint32)  # noqa: E731
    metadata = {
        "general.architecture": "llama",
        "general.file_type": u32(0),
        "llama.embedding_length": u32(HIDDEN),
        "llama.block_count": u32(LAYERS),
        "llama.feed_forward_length": u32(128),
        "llama.attention.head_count": u32(HEADS),
        "llama.attention.head_count_kv": u32(KV_HEADS),
        "llama.context_length": u32(4096),
        "llama.rope.freq_base": mx.array(10000.0),
        "llama.vocab_size": u32(vocab),
        "llama.attention.layer_norm_rms_epsilon": mx.array(1e-5),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.token_type": mx.array(
            [3 if t.startswith("<|") else 1 for t in tokens], dtype=mx.int32
        ),
        "tokenizer.ggml.eos_token_id": u32(tokenizer.token_to_id("<|im_end|>")),
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    mx.save_gguf(str(path), arrays, metadata)
    return path, model, tokenizer


def test_imported_gguf_computes_the_same_logits_as_the_source_model(llama_gguf, mlxctl_home):
    import mlx.core as mx
    from mlx_lm import load

    path, source_model, source_tokenizer = llama_gguf
    info = registry.import_file(path, "tiny-llama")
    assert (info.name, info.architecture, info.quantization) == ("tiny-llama", "llama", "F32")
    model, tokenizer = load(info.path)
    text = "def hello(name):\n    return f'hi {name}' 123"
    ids = tokenizer.encode(text)
    assert ids == source_tokenizer.encode(text).ids, "tokenizer rebuilt from GGUF metadata differs"
    expected = source_model(mx.array([ids]))
    actual = model(mx.array([ids]))
    assert mx.allclose(expected, actual, atol=1e-4).item(), "q/k permutation not undone"
    assert "<|im_start|>user" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )


def test_import_rejects_other_architectures_and_leaves_nothing(tmp_path, mlxctl_home):
    import mlx.core as mx

    path = tmp_path / "other.gguf"
    mx.save_gguf(
        str(path),
        {"token_embd.weight": mx.zeros((4, 4))},
        {
            "general.architecture": "mamba",
            "general.file_type": mx.array(0, mx.uint32),
            "llama.attention.head_count": mx.array(1, mx.uint32),
        },
    )
    with pytest.raises(UnsupportedModelError, match="architecture 'mamba'"):
        registry.import_file(path, "other")
    models = mlxctl_home / "models"
    assert not models.exists() or list(models.iterdir()) == []
    assert registry.installed() == []


def test_import_names_unsupported_tensor_types(tmp_path, mlxctl_home):
    import mlx.core as mx

    path = tmp_path / "k.gguf"
    mx.save_gguf(
        str(path),
        {"token_embd.weight": mx.zeros((4, 4))},
        {
            "general.architecture": "llama",
            "general.file_type": mx.array(15, mx.uint32),
            "llama.attention.head_count": mx.array(1, mx.uint32),
        },
    )
    with pytest.raises(UnsupportedModelError, match="file_type=15"):
        import_gguf(path, mlxctl_home / "models" / "k")
    assert not (mlxctl_home / "models" / "k").exists()


def test_registry_resolves_names_dirs_and_repo_ids(tiny_model_path, mlxctl_home):
    assert registry.resolve(str(tiny_model_path)) == str(tiny_model_path.resolve())
    assert registry.resolve("mlx-community/Some-Model-4bit") == "mlx-community/Some-Model-4bit"
    with pytest.raises(ModelError) as missing_demo:
        registry.resolve("demo")
    assert "model pull demo" in missing_demo.value.hint
    with pytest.raises(ModelError, match="not an MLX model directory"):
        registry.resolve(str(mlxctl_home))
    with pytest.raises(ModelError, match="invalid model name"):
        registry.remove("../etc")


def test_model_cli_lists_and_removes(llama_gguf, mlxctl_home):
    path, _, _ = llama_gguf
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "mlxctl", "model", *args], capture_output=True, text=True
    )
    imported = run("import", str(path), "--name", "cli-llama")
    assert imported.returncode == 0, imported.stderr
    listed = json.loads(run("ls", "--json").stdout)
    assert [(m["name"], m["architecture"], m["context_length"], m["inputs"]) for m in listed] == [
        ("cli-llama", "llama", 4096, "text")
    ]
    again = run("import", str(path), "--name", "cli-llama")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert run("rm", "cli-llama", "--yes").returncode == 0
    assert json.loads(run("ls", "--json").stdout) == []
    missing = run("rm", "cli-llama")
    assert missing.returncode == 1 and "no installed model" in missing.stderr


def test_cli_start_up_does_not_import_mlx():
    probe = (
        "import sys, mlxctl.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_tiny_model_is_deterministic_and_tool_capable(tmp_path):
    from mlx_lm import load

    from server.testing.tiny_model import build_tiny_model

    a = build_tiny_model(tmp_path / "a", context=4096)
    b = build_tiny_model(tmp_path / "b", context=4096)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    _, tokenizer = load(str(a))
    assert tokenizer.has_tool_calling and tokenizer.tool_call_start == "<tool_call>"
    assert json.loads((a / "config.json").read_text())["max_position_embeddings"] == 4096


@pytest.mark.network
def test_demo_pull_is_idempotent_and_answers_paris(demo_model_path, monkeypatch):
    from mlx_lm import generate

    from mlxctl.models.pull import DEMO, pull, sha256_of
    from server.model.loading import load_model

    home = demo_model_path.parent.parent
    monkeypatch.setenv("MLXCTL_HOME", str(home))
    info, installed = pull("demo")  # the fixture's home: already there, nothing fetched
    assert (info.path, installed) == (str(demo_model_path), False)
    assert sha256_of(home / "downloads" / DEMO.wheel_name) == DEMO.sha256
    config = json.loads((demo_model_path / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["model_type"] == "llama"

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answers = {}
    for dequantize in (True, False):
        loaded = load_model(str(demo_model_path), dequantize_on_cpu=dequantize)
        prompt = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        answers[dequantize] = generate(loaded.model, loaded.tokenizer, prompt, max_tokens=12)
    assert "Paris" in answers[True]
    assert answers[True] == answers[False], "float32 expansion changed the greedy answer"


def test_a_vision_language_model_is_listed_as_taking_images():
    from tests.conftest import tiny_vlm

    info = registry.describe(tiny_vlm())
    assert (info.architecture, info.inputs, info.context_length) == ("gemma3", "text, image", 32768)
