"""The overrides `mlxctl codex` derives: from the worker's report, the user's own values kept."""

from __future__ import annotations

from mlxctl import codex_env

REPORT = {
    "model": "served-model",
    "context_length": 32768,
    "cache": {"prefill_tokens_per_second": 100.0},
}
PROVIDER = "model_providers.mlxctl"


def by_key(overrides) -> dict:
    return {o.key: o.value for o in overrides}


def test_overrides_follow_what_the_worker_reports():
    got = by_key(codex_env.overrides_for(REPORT, "http://127.0.0.1:8080", None))
    assert got["model_provider"] == "mlxctl"
    assert got["model"] == "served-model"
    assert got[f"{PROVIDER}.base_url"] == "http://127.0.0.1:8080/v1"
    assert got[f"{PROVIDER}.wire_api"] == "responses"
    assert got[f"{PROVIDER}.env_key"] == codex_env.KEY_ENV
    assert got["model_context_window"] == 32768
    assert got["model_auto_compact_token_limit"] == 32768 - 4096  # an eighth of a small context
    # A cold 32K prefill at 100 tok/s is ~328 s: 1.5x for the idle timeout.
    assert got[f"{PROVIDER}.stream_idle_timeout_ms"] == 492_000


def test_a_large_fast_model_keeps_codexs_idle_timeout():
    report = {"model": "m", "context_length": 262144, "cache": {"prefill_tokens_per_second": 5e4}}
    got = by_key(codex_env.overrides_for(report, "http://h:1/", "k"))
    assert got[f"{PROVIDER}.base_url"] == "http://h:1/v1"
    assert got["model_auto_compact_token_limit"] == 262144 - 13000
    assert got[f"{PROVIDER}.stream_idle_timeout_ms"] == 300_000


def test_the_users_own_values_win_except_routing():
    mine = {
        "model": "gpt-5.5",  # routing: ours wins
        "model_context_window": 16000,
        "model_providers": {"mlxctl": {"stream_idle_timeout_ms": 1000}},
    }
    overrides = codex_env.overrides_for(REPORT, "http://h:1", None, mine, ["-c", "x=1"])
    got = by_key(overrides)
    assert got["model"] == "served-model"
    assert "model_context_window" not in got
    assert f"{PROVIDER}.stream_idle_timeout_ms" not in got
    assert got["model_auto_compact_token_limit"] == 28672
    assert codex_env.left_to_user(REPORT, mine, []) == [
        "model_context_window",
        f"{PROVIDER}.stream_idle_timeout_ms",
    ]
    # The user's own `-c` on the command line counts as theirs too.
    args = ["exec", "-c", "model_auto_compact_token_limit=9000", "--config=model_context_window=1"]
    got = by_key(codex_env.overrides_for(REPORT, "http://h:1", None, {}, args))
    assert "model_auto_compact_token_limit" not in got and "model_context_window" not in got


def test_an_active_profile_is_routed_to_the_worker_too():
    mine = {"profile": "work", "profiles": {"work": {"model": "o3", "model_context_window": 8}}}
    got = by_key(codex_env.overrides_for(REPORT, "http://h:1", None, mine))
    assert got["profiles.work.model"] == "served-model"
    assert got["profiles.work.model_provider"] == "mlxctl"
    assert "model_context_window" not in got  # the profile's own value
    # `--profile` on the command line picks the profile.
    got = by_key(codex_env.overrides_for(REPORT, "http://h:1", None, {}, ["-p", "fast"]))
    assert got["profiles.fast.model"] == "served-model"


def test_overrides_are_toml_values_in_the_arguments():
    overrides = codex_env.overrides_for(REPORT, "http://h:1", None)
    argv = codex_env.argv("codex", overrides, ["exec", "hi"])
    assert argv[:3] == ["codex", "-c", 'model_provider="mlxctl"']
    assert "model_context_window=32768" in argv
    assert argv[-2:] == ["exec", "hi"]  # the user's own arguments come last
    env = codex_env.environment(None, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", codex_env.KEY_ENV: "local"}


def test_the_users_config_is_read_from_codex_home(tmp_path):
    (tmp_path / "config.toml").write_text('model_context_window = 9\n[profiles.a]\nmodel = "x"\n')
    assert codex_env.read_user_config({"CODEX_HOME": str(tmp_path)}) == {
        "model_context_window": 9,
        "profiles": {"a": {"model": "x"}},
    }
    assert codex_env.read_user_config({"HOME": str(tmp_path)}) == {}  # no ~/.codex/config.toml
    (tmp_path / "config.toml").write_text("not = [toml")
    assert codex_env.read_user_config({"CODEX_HOME": str(tmp_path)}) == {}
