"""Which tool parser reads the model's calls: `--tool-parser`, inferred, or the Hermes fallback
(a template that writes <tool_call> but no mlx-lm parser is inferred for)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import pytest

from server.testing.scripts import WEATHER_TOOL
from tests.fixtures_worker import API_KEY, REPO_ROOT, start_worker
from tests.worker.test_api import PARIS

AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def unnamed_template_model(scripted_model_path, tmp_path_factory):
    """The scripted model with a template that spells the call's name `tool_call['name']`:
    mlx-lm infers no parser from it (its Hermes rule looks for `tool_call.name`)."""
    out = tmp_path_factory.mktemp("unnamed") / "model"
    shutil.copytree(scripted_model_path, out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    template = config["chat_template"].replace("tool_call.name", "tool_call['name']")
    assert "tool_call.name" not in template and "<tool_call>" in template
    config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    return out


def status(worker) -> dict:
    return httpx.get(worker.base_url + "/v1/status", headers=AUTH).json()


def weather_call(worker) -> dict:
    body = {"model": "claude-x", "messages": PARIS, "tools": [WEATHER_TOOL], "temperature": 0}
    r = httpx.post(worker.base_url + "/v1/chat/completions", json=body, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_hermes_fallback_when_the_template_writes_tool_call_but_nothing_is_inferred(
    unnamed_template_model,
):
    from mlx_lm.utils import load_tokenizer

    assert load_tokenizer(unnamed_template_model).tool_parser is None  # mlx-lm alone: none
    worker = start_worker(unnamed_template_model, "--no-cache", api_key=API_KEY)
    try:
        assert status(worker)["tool_parser"] == {"name": "json_tools", "source": "fallback"}
        choice = weather_call(worker)
        [call] = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather" and choice["finish_reason"] == "tool_calls"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    finally:
        worker.stop()
    assert "falling back to json_tools" in worker.log()


def test_tool_parser_flag_overrides_the_inference(tiny_model_path):
    worker = start_worker(
        tiny_model_path, "--no-cache", "--tool-parser", "qwen3_coder", api_key=API_KEY
    )
    try:
        assert status(worker)["tool_parser"] == {"name": "qwen3_coder", "source": "--tool-parser"}
    finally:
        worker.stop()


def test_an_unknown_tool_parser_is_a_usage_error(tiny_model_path):
    run = subprocess.run(
        [sys.executable, "-m", "server", "--model", str(tiny_model_path), "--tool-parser", "nope"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "unknown --tool-parser 'nope'" in run.stderr + run.stdout
    assert "qwen3_coder" in run.stderr + run.stdout


def test_config_tool_parser_reaches_the_worker_command_line():
    from mlxctl.config import SCHEMA, worker_options
    from server.edge.contract import option_names, worker_argv

    values = {key.path: key.default for key in SCHEMA}
    assert worker_options(values)["tool_parser"] is None  # '' = inferred: no flag
    values["tool_parser"] = "qwen3_coder"
    argv = worker_argv("m", "127.0.0.1", 8080, **worker_options(values))
    assert argv[argv.index("--tool-parser") + 1] == "qwen3_coder"
    assert "tool_parser" in option_names()  # new releases record that they accept it
