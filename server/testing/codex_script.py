"""The scripted model Codex drives end to end: it calls Codex's shell tool, then says it is done.

Codex's ~12K-token prompt carries the date, the working directory, skill paths and ids, so the
model must not depend on it. Its attention layers see only a sliding window of WINDOW tokens (the
one global layer's attention output is zeroed and frozen), so a reply depends on the last
2 x WINDOW tokens alone: the user's request, then the command's output. Both are stable text.
"""

from __future__ import annotations

from pathlib import Path

from server.testing.scripts import call_text

WINDOW = 32  # two sliding layers: a reply sees the last 64 tokens
LAYERS = 3  # sliding, global (attention zeroed), sliding: gemma3_text's pattern of 2
SHARPEN = 4.0  # how much sharper than trained the saved model samples
FILE = "made-by-codex.txt"
COMMAND = f"seq 1 60 | tee {FILE}"
OUTPUT = "".join(f"{n}\n" for n in range(1, 61))
PROMPT = (
    "Please run exactly one shell command for me with your exec_command tool, wait until it "
    "ends, read what it prints, and then tell me in one short sentence that the file is ready "
    f"and what it holds. The command is: {COMMAND}"
)
REPLY = f"Done: {FILE} holds the numbers 1 to 60, one per line."
SHELL_TOOL = {
    "type": "function",
    "function": {
        "name": "exec_command",
        "description": "Runs a command in a PTY, returning output or a session ID.",
        "parameters": {
            "type": "object",
            "properties": {"cmd": {"type": "string", "description": "Shell command to execute."}},
            "required": ["cmd"],
        },
    },
}
# What Codex 0.171 sends back for exec_command: a header that changes per run, then the output.
RESULT_HEADER = (
    "Chunk ID: 5e2f1a\nWall time: 0.0012 seconds\nProcess exited with code 0\n"
    "Original token count: 60\nOutput:\n"
)


def codex_script() -> list[tuple[list[dict], list[dict] | None, str]]:
    """(messages, tools, reply): the call on the request, the sentence on the command's output."""
    context = "<environment_context>\n  <cwd>/tmp</cwd>\n</environment_context>"
    ask: list[dict] = [
        {"role": "user", "content": context},
        {"role": "user", "content": PROMPT},
    ]
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "exec_command", "arguments": {"cmd": COMMAND}},
    }
    answered: list[dict] = [
        *ask,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": RESULT_HEADER + OUTPUT},
    ]
    return [
        (ask, [SHELL_TOOL], call_text("exec_command", {"cmd": COMMAND})),
        (answered, [SHELL_TOOL], REPLY),
    ]


def build_codex_model(destination: Path) -> Path:
    """A tiny gemma3_text model that replays `codex_script` from its last 64 tokens alone.

    Codex sends no temperature, so the worker samples at 1.0: the saved model is sharpened so a
    sampled reply is the script's all but always.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model

    from server.testing.tiny_model import build_tiny_model, train_on_script

    destination = Path(destination)
    if (destination / "trained").exists():
        return destination
    build_tiny_model(destination, family="gemma3_text", layers=LAYERS, window=WINDOW)
    model, _ = load_model(destination)
    for layer in model.model.layers:
        if not layer.self_attn.is_sliding:  # keep only what the window sees
            o_proj = layer.self_attn.o_proj
            o_proj.weight = mx.zeros_like(o_proj.weight)
            o_proj.freeze()
    train_on_script(model, destination, codex_script(), steps=4000, target_loss=2e-4)
    # Logits SHARPEN times larger: Codex's temperature 1.0 samples the trained one at 1/SHARPEN.
    norm = model.model.norm  # gemma's RMSNorm scales by 1 + weight
    norm.weight = SHARPEN * (1.0 + norm.weight) - 1.0
    # Trained through the embedding as the output head (train_on_script's way): saved without
    # gemma3's separate lm_head, the model ties them too.
    weights = dict(tree_flatten(model.parameters()))
    weights.pop("lm_head.weight", None)
    mx.save_safetensors(str(destination / "model.safetensors"), weights, metadata={"format": "mlx"})
    (destination / "trained").write_text("codex_script\n")
    return destination
