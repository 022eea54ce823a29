"""A chat template that drops tools (as the demo model's does): said, never silent.

The worker says so once in its log and in `/v1/status`; a request with tools under `auto` is
served (without them); a forced `tool_choice` cannot be enforced there, so it is a 400 in each
protocol's shape, never plain text; errors name the model by its served name, not its path.
"""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.fixtures_worker import API_KEY, start_worker
from tests.worker.test_api import ANTHROPIC_TOOL, PARIS

# SmolLM2's template, in short: messages only, no `tools` anywhere.
NO_TOOLS_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
AUTH = {"x-api-key": API_KEY}


def no_tools_model(source, destination):
    """A copy of the tiny model whose chat template drops tools."""
    shutil.copytree(source, destination)
    config_path = destination / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = NO_TOOLS_TEMPLATE
    config_path.write_text(json.dumps(config))
    return destination


@pytest.fixture(scope="module")
def model_dir(tiny_model_path, tmp_path_factory):
    return no_tools_model(tiny_model_path, tmp_path_factory.mktemp("models") / "plain-chat")


@pytest.fixture(scope="module")
def plain_worker(model_dir):
    handle = start_worker(model_dir, "--max-output-tokens", "8", "--no-cache", api_key=API_KEY)
    yield handle
    handle.stop()


def anthropic(worker):
    from anthropic import Anthropic

    return Anthropic(base_url=worker.base_url, api_key=API_KEY, max_retries=0, timeout=60)


def openai(worker):
    from openai import OpenAI

    return OpenAI(base_url=worker.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_status_and_log_say_the_template_drops_tools_once(plain_worker):
    status = httpx.get(plain_worker.base_url + "/v1/status", headers=AUTH, timeout=10).json()
    assert status["tools"] == "dropped by the chat template"
    with anthropic(plain_worker) as client:
        for _ in range(2):  # `auto` is served, without the tools
            message = client.messages.create(
                model="claude-x", max_tokens=4, messages=PARIS, tools=[ANTHROPIC_TOOL]
            )
            assert message.stop_reason in ("end_turn", "max_tokens")
    assert plain_worker.log().count("the chat template drops tools") == 1


def test_a_forced_anthropic_tool_choice_is_a_400_not_text(plain_worker):
    from anthropic import BadRequestError

    for choice in ({"type": "tool", "name": ANTHROPIC_TOOL["name"]}, {"type": "any"}):
        with anthropic(plain_worker) as client, pytest.raises(BadRequestError) as caught:
            client.messages.create(
                model="claude-x",
                max_tokens=4,
                messages=PARIS,
                tools=[ANTHROPIC_TOOL],
                tool_choice=choice,
            )
        error = caught.value.body["error"]
        assert error["type"] == "invalid_request_error"
        assert "tool_choice" in error["message"] and "drops tools" in error["message"]


def test_a_forced_openai_tool_choice_is_a_400_not_text(plain_worker):
    from openai import BadRequestError

    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": ANTHROPIC_TOOL["input_schema"]},
    }
    with openai(plain_worker) as client, pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(
            model="claude-x", max_tokens=4, messages=PARIS, tools=[tool], tool_choice="required"
        )
    assert caught.value.body["param"] == "tool_choice"


def test_errors_name_the_model_by_its_served_name_not_its_path(plain_worker, model_dir):
    from openai import NotFoundError

    with openai(plain_worker) as client, pytest.raises(NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", max_tokens=4, messages=PARIS)
    message = caught.value.body["message"]
    assert "'plain-chat'" in message and str(model_dir) not in message
