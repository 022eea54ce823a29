"""The environment `mlxctl claude` derives: the user's own values and Claude Code's floors."""

from __future__ import annotations

from mlxctl import claude_env

REPORT = {"model": "m", "context_length": 32768, "batch_capacity": 2}


def by_name(settings) -> dict[str, str]:
    return {s.name: s.value for s in settings}


def test_a_users_value_wins_except_where_it_routes():
    user = {"API_TIMEOUT_MS": "5", "ANTHROPIC_MODEL": "other", "CLAUDE_CODE_ATTRIBUTION_HEADER": ""}
    settings = claude_env.settings_for(REPORT, "http://h:1", None, user=user)
    env = by_name(settings)
    assert env["API_TIMEOUT_MS"] == "5"
    assert env["ANTHROPIC_MODEL"] == "m"  # the worker answers to its own name
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"  # an empty value is no value
    why = {s.name: s.why for s in settings}
    assert why["API_TIMEOUT_MS"] == "yours, from your environment"


def test_the_percentage_follows_the_users_window():
    # Compact at 28,672 tokens: 14.3% of the user's 200K window, not 28.6% of ours.
    env = by_name(claude_env.settings_for(REPORT, "u", None, user={
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "200k"}))  # fmt: skip
    assert env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "200k"
    assert env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "14.3"
    # Below Claude Code's floor it is raised to 100K, so the base is 100K.
    env = by_name(claude_env.settings_for(REPORT, "u", None, user={
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "50000"}))  # fmt: skip
    assert env["CLAUDE_AUTOCOMPACT_PCT_OVERRIDE"] == "28.6"


def test_token_counts_read_as_claude_code_reads_them():
    assert claude_env._tokens("200k") == 200_000
    assert claude_env._tokens(" 150000 ") == 150_000
    assert claude_env._tokens("lots") is None and claude_env._tokens(None) is None


def test_subagents_follow_the_batch_capacity():
    env = by_name(claude_env.settings_for(REPORT, "u", None))
    assert env["CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS"] == "2"
    assert env["CLAUDE_CODE_SUBAGENT_MODEL_FORCE"] == "1"
    assert env["ANTHROPIC_DEFAULT_FABLE_MODEL"] == "m"


def test_claude_codes_families_go_to_the_models_whose_aliases_take_them():
    families = {"haiku": "fast", "opus": "coder"}
    user = {"ANTHROPIC_DEFAULT_OPUS_MODEL": "mine", "ANTHROPIC_MODEL": "other"}
    settings = claude_env.settings_for(REPORT, "u", None, user=user, families=families)
    env = by_name(settings)
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == env["ANTHROPIC_SMALL_FAST_MODEL"] == "fast"
    assert env["ANTHROPIC_DEFAULT_OPUS_MODEL"] == "mine"  # a user's own choice of model wins
    assert env["ANTHROPIC_DEFAULT_SONNET_MODEL"] == env["ANTHROPIC_MODEL"] == "m"  # the default
    assert "CLAUDE_CODE_SUBAGENT_MODEL_FORCE" not in env  # subagents keep the model they name
