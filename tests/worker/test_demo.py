"""The real demo model (SmolLM2-135M-Instruct) end to end over both APIs."""

from __future__ import annotations

import pytest

from tests.fixtures_worker import start_worker

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.slow
@pytest.mark.network
def test_demo_model_says_paris_over_both_apis(demo_model_path):
    from anthropic import Anthropic
    from openai import OpenAI

    handle = start_worker(demo_model_path)
    try:
        with OpenAI(base_url=handle.base_url + "/v1", api_key="x", max_retries=0) as client:
            r = client.chat.completions.create(
                model="demo", messages=QUESTION, max_tokens=24, temperature=0
            )
        assert "Paris" in r.choices[0].message.content
        with (
            Anthropic(base_url=handle.base_url, api_key="x", max_retries=0) as client,
            client.messages.stream(
                model="claude-sonnet-4-5",
                max_tokens=24,
                messages=QUESTION,
                extra_body={"temperature": 0},
            ) as stream,
        ):
            text = "".join(stream.text_stream)
        assert "Paris" in text
    finally:
        assert handle.stop() == 0
