"""`mlxctl codex` as a user runs it: `--print-config`, a missing binary, and the overrides that
reach a stand-in `codex` (the user's own config.toml values kept, routing always the worker's)."""

from __future__ import annotations

import json
import shutil
import stat

STATUS = {
    "model": "served-model",
    "context_length": 32768,
    "cache": {"prefill_tokens_per_second": 100.0},
}


def args_dumping_codex(tmp_path):
    """A stand-in `codex` that records its arguments and environment and exits 0."""
    dump = tmp_path / "codex-call.json"
    wrapper = tmp_path / "codex"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec {shutil.which('python3') or 'python3'} -c 'import json, os, sys; "
        f'json.dump([sys.argv[1:], dict(os.environ)], open("{dump}", "w"))\' "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper, dump


def config_args(argv: list[str]) -> dict[str, str]:
    """The `-c key=value` pairs among `argv`."""
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_print_config_against_a_fake_worker(make_ctl, tmp_path):
    ctl = make_ctl(env={"FAKE_WORKER_STATUS": json.dumps(STATUS), "CODEX_HOME": str(tmp_path)})
    result = ctl.run("codex", "--print-config", timeout=60)  # starts the service first
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'model_provider = "mlxctl"  # the worker, as a custom provider' in lines
    assert f'model_providers.mlxctl.base_url = "{ctl.url}/v1"  # the worker' in lines
    assert 'model = "served-model"  # the served model\'s name' in lines
    assert "model_context_window = 32768  # the model's context length" in lines
    assert any(line.startswith("model_providers.mlxctl.stream_idle_timeout_ms = 492000 ")
               for line in lines)  # fmt: skip
    assert ctl.status()[1] == 0  # the service is running


def test_a_missing_codex_binary_gets_a_hint(make_ctl, tmp_path):
    ctl = make_ctl()
    ctl.env["MLXCTL_CODEX"] = str(tmp_path / "no-such-codex")
    result = ctl.run("codex", "exec", "hi")
    assert result.returncode == 127
    assert result.stderr.splitlines() == [
        "error: `codex` (OpenAI Codex CLI) is not installed",
        "hint: install Codex: `npm install -g @openai/codex` (or point MLXCTL_CODEX at a "
        "`codex` binary)",
    ]
    assert ctl.status()[1] == 3  # nothing was started for it


def test_the_users_own_values_win_and_routing_follows_the_worker(make_ctl, tmp_path):
    wrapper, dump = args_dumping_codex(tmp_path)
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    mine = 'model = "gpt-5.5"\nmodel_context_window = 16000\n[profiles.fast]\nmodel = "o3"\n'
    (codex_home / "config.toml").write_text(mine)
    env = {
        "FAKE_WORKER_STATUS": json.dumps(STATUS),
        "MLXCTL_CODEX": str(wrapper),
        "CODEX_HOME": str(codex_home),
    }
    ctl = make_ctl(env=env)
    result = ctl.run("codex", "--profile", "fast", "exec", "hi", timeout=60)
    assert result.returncode == 0, result.stderr
    argv, given = json.loads(dump.read_text())
    assert argv[-4:] == ["--profile", "fast", "exec", "hi"]  # the user's arguments, last
    overrides = config_args(argv)
    assert overrides["model"] == overrides["profiles.fast.model"] == '"served-model"'
    assert overrides["model_providers.mlxctl.base_url"] == f'"{ctl.url}/v1"'
    assert "model_context_window" not in overrides  # theirs, from config.toml
    assert overrides["model_auto_compact_token_limit"] == "28672"
    assert given["MLXCTL_CODEX_API_KEY"] == "local"  # the worker has no key
    assert "model_context_window  # yours" in result.stderr
    assert (codex_home / "config.toml").read_text() == mine  # untouched
