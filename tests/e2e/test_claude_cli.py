"""`mlxctl claude`: the environment it derives, `--print-env`, a missing binary, and Claude Code
itself (the npm package `.ci/run` installs under .tools/) against the real worker."""

from __future__ import annotations

import json
import shutil
import stat

import pytest

from mlxctl import claude_env
from tests.fixtures_supervisor import REPO_ROOT

LOCAL_CLAUDE = REPO_ROOT / ".tools" / "claude-code" / "node_modules" / ".bin" / "claude"


def by_name(settings) -> dict[str, str]:
    return {s.name: s.value for s in settings}


def test_settings_follow_what_the_worker_reports():
    report = {
        "model": "qwen3-coder",
        "context_length": 32768,
        "cache": {"prefill_tokens_per_second": 100.0},
        "batch_capacity": 1,
    }
    env = by_name(claude_env.settings_for(report, "http://127.0.0.1:8080", None))
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert env["ANTHROPIC_AUTH_TOKEN"] == "local"
    for alias in claude_env.MODEL_ALIASES:
        assert env[alias] == "qwen3-coder"
    assert env["CLAUDE_CODE_SUBAGENT_MODEL_FORCE"] == "1"
    # 32K context: compact at 28,672 tokens = 28.6% of Claude Code's 100K minimum window, which
    # is what we send (Claude Code raises a smaller one, warning on every run).
    assert env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "100000"
    assert env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "28.6"
    assert env["CLAUDE_CODE_BLOCKING_LIMIT_OVERRIDE"] == "31768"
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "4096"
    # A cold 32K prefill at 100 tok/s is ~328 s: twice that plus 2 min, 1.5x for idle.
    assert env["API_TIMEOUT_MS"] == "776000"
    assert env["CLAUDE_STREAM_IDLE_TIMEOUT_MS"] == "492000"
    assert env["CLAUDE_CODE_MAX_TOOL_USE_CONCURRENCY"] == "1"
    assert env["CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS"] == "1"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"


def test_a_large_fast_model_keeps_claude_codes_defaults():
    report = {"model": "m", "context_length": 262144, "cache": {"prefill_tokens_per_second": 5e4}}
    env = by_name(claude_env.settings_for(report, "http://h:1", "k"))
    assert env["ANTHROPIC_AUTH_TOKEN"] == "k"
    assert env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "95"  # 262144 - 13000 of 262144
    assert "CLAUDE_CODE_BLOCKING_LIMIT_OVERRIDE" not in env
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" not in env
    assert env["API_TIMEOUT_MS"] == "600000" and env["CLAUDE_STREAM_IDLE_TIMEOUT_MS"] == "300000"


def test_print_env_against_a_fake_worker(make_ctl):
    status = {"context_length": 32768, "cache": {"prefill_tokens_per_second": 100.0}}
    ctl = make_ctl(env={"FAKE_WORKER_STATUS": json.dumps(status)})
    result = ctl.run("claude", "--print-env", timeout=60)  # starts the service first
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "unset ANTHROPIC_API_KEY"
    assert f"export ANTHROPIC_BASE_URL={ctl.url}" in lines
    assert "export API_TIMEOUT_MS=776000" in lines
    assert all(line.startswith(("export ", "unset ")) for line in lines)
    assert ctl.status()[1] == 0  # the service is running


def test_a_missing_claude_binary_gets_a_hint(make_ctl, tmp_path):
    ctl = make_ctl()
    ctl.env["MLXCTL_CLAUDE"] = str(tmp_path / "no-such-claude")
    result = ctl.run("claude", "-p", "hi")
    assert result.returncode == 127
    assert result.stderr.splitlines() == [
        "error: `claude` (Claude Code) is not installed",
        "hint: install Claude Code: `npm install -g @anthropic-ai/claude-code` (or point "
        "MLXCTL_CLAUDE at a `claude` binary)",
    ]
    assert ctl.status()[1] == 3  # nothing was started for it


def claude_binary() -> str | None:
    return str(LOCAL_CLAUDE) if LOCAL_CLAUDE.exists() else shutil.which("claude")


@pytest.mark.skipif(
    claude_binary() is None, reason="Claude Code is not installed (.ci/run installs it with npm)"
)
def test_claude_code_round_trips_against_the_real_worker(make_ctl, tmp_path):
    # The real CLI, wrapped so the test sees the environment it was given.
    dump = tmp_path / "claude-env.json"
    wrapper = tmp_path / "claude"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"{shutil.which('python3') or 'python3'} -c 'import json, os; "
        f'json.dump(dict(os.environ), open("{dump}", "w"))\'\n'
        f'exec {claude_binary()} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    home = tmp_path / "user-home"  # Claude Code writes ~/.claude
    home.mkdir()
    worker = (
        "{python} -m server --model {model} --host {host} --port {port} "
        f"--max-output-tokens 16 --cache-dir {tmp_path / 'kv'}"
    )
    env = {"MLXCTL_WORKER_COMMAND": worker, "HOME": str(home), "MLXCTL_CLAUDE": str(wrapper)}
    ctl = make_ctl(env={**env, "ANTHROPIC_API_KEY": "not-this"})
    (ctl.home / "config.toml").write_text(
        (ctl.home / "config.toml").read_text().replace("# test config\n", 'api_key = "test-key"\n')
    )
    result = ctl.run("claude", "-p", "say hi", timeout=600)
    report, code = ctl.status()
    assert code == 0
    # Claude Code got what the worker reported, and nothing that points elsewhere.
    given = json.loads(dump.read_text())
    assert given["ANTHROPIC_BASE_URL"] == ctl.url
    assert given["ANTHROPIC_AUTH_TOKEN"] == "test-key"
    assert "ANTHROPIC_API_KEY" not in given
    assert given["ANTHROPIC_MODEL"] == report["model"]
    assert report["context_length"] == 32768
    assert given["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "100000"  # Claude Code's floor
    assert given["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "16"
    assert f"ANTHROPIC_BASE_URL={ctl.url}" in result.stderr  # it said what it set
    assert "[autocompact]" not in result.stdout + result.stderr  # no window warning
    # Round trips: Claude Code's requests reached the worker (authorized by the token it was
    # given) and its follow-ups reused the cached prompt prefix.
    turns = [r for r in report["recent"] if r["protocol"] == "anthropic"]
    assert len(turns) >= 2, result.stdout + result.stderr
    assert all(r["finish"] == "length" for r in turns)  # 16 tokens each
    assert all(r["cached_tokens"] > 0.9 * r["prompt_tokens"] for r in turns[:-1])
    # A random-weight model never ends its turn: Claude Code stops at its output limit, exit 1.
    assert result.returncode == 1
    assert "exceeded the 16 output token maximum" in result.stdout


def test_a_mid_conversation_system_turn_is_user_text():
    # Claude Code (2.1.197 on) sends one after the first user turn (beta mid-conversation-system).
    from server.api.anthropic.protocol import MessagesRequest, to_chat_request

    turns = [{"role": "user", "content": "hi"}, {"role": "system", "content": "Agent types"}]
    body = MessagesRequest(model="claude-x", max_tokens=5, messages=turns)
    assert to_chat_request(body).messages == [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "Agent types"},
    ]
