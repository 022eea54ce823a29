"""`mlxctl claude` as a user runs it: the user's own settings reach Claude Code unchanged."""

from __future__ import annotations

import json
import shutil
import stat

STATUS = {
    "model": "served-model",
    "context_length": 32768,
    "cache": {"prefill_tokens_per_second": 100.0},
    "batch_capacity": 3,
}


def env_dumping_claude(tmp_path):
    """A stand-in `claude` that records the environment it was given and exits 0."""
    dump = tmp_path / "claude-env.json"
    wrapper = tmp_path / "claude"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shutil.which('python3') or 'python3'} -c 'import json, os; "
        f'json.dump(dict(os.environ), open("{dump}", "w"))\'\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper, dump


def test_the_users_own_values_win_and_the_rest_follows_the_worker(make_ctl, tmp_path):
    wrapper, dump = env_dumping_claude(tmp_path)
    mine = {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "16", "API_TIMEOUT_MS": "1234000"}
    ctl = make_ctl(
        env={"FAKE_WORKER_STATUS": json.dumps(STATUS), "MLXCTL_CLAUDE": str(wrapper), **mine}
    )
    result = ctl.run("claude", "-p", "hi", timeout=60)
    assert result.returncode == 0, result.stderr
    given = json.loads(dump.read_text())
    assert {name: given[name] for name in mine} == mine
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS=16  # yours" in result.stderr
    # Claude Code raises a smaller window to 100K, with a warning on every run.
    assert given["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "100000"
    assert given["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "28.6"
    for alias in ("ANTHROPIC_DEFAULT_FABLE_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL"):
        assert given[alias] == "served-model"
    assert given["CLAUDE_CODE_SUBAGENT_MODEL_FORCE"] == "1"
    assert given["CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS"] == "3"
    # --print-env says the same, the user's values included.
    lines = ctl.run("claude", "--print-env", timeout=60).stdout.splitlines()
    assert "export CLAUDE_CODE_MAX_OUTPUT_TOKENS=16" in lines
    assert "export API_TIMEOUT_MS=1234000" in lines


def test_the_users_address_does_not_send_claude_code_elsewhere(make_ctl, tmp_path):
    # Routing is the command's job: a base URL left in the user's shell would skip the worker.
    wrapper, dump = env_dumping_claude(tmp_path)
    ctl = make_ctl(
        env={"MLXCTL_CLAUDE": str(wrapper), "ANTHROPIC_BASE_URL": "https://elsewhere.invalid"}
    )
    assert ctl.run("claude", "-p", "hi", timeout=60).returncode == 0
    assert json.loads(dump.read_text())["ANTHROPIC_BASE_URL"] == ctl.url
