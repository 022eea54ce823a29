"""`mlxctl config`: tomlkit keeps comments, values are typed, errors name the key path."""

from __future__ import annotations

import pytest
import tomlkit
from typer.testing import CliRunner

from mlxctl import config, exit_codes
from mlxctl.cli import register_commands
from mlxctl.errors import ConfigError

app = register_commands()

USER_FILE = """\
# my settings, do not lose this
port = 9000  # the port I like

[restart]
# be patient with my slow disk
backoff_max = 30.0
"""


def test_defaults_without_a_file(mlxctl_home):
    values = config.load()
    assert values["port"] == 8080
    assert values["host"] == "127.0.0.1"
    assert values["restart.backoff_max"] == 60.0
    assert not config.config_path().exists()


def test_set_keeps_comments_and_order(mlxctl_home):
    config.config_path().write_text(USER_FILE)
    assert config.set_value("port", "9100") == 9100
    assert config.set_value("restart.backoff_max", "12") == 12.0
    assert config.set_value("logs.backups", "5") == 5
    text = config.config_path().read_text()
    assert "# my settings, do not lose this" in text
    assert "# be patient with my slow disk" in text
    assert text.index("port") < text.index("[restart]")
    assert config.load()["port"] == 9100
    assert config.load()["restart.backoff_max"] == 12.0
    assert tomlkit.parse(text)["logs"]["backups"] == 5


def test_set_creates_a_commented_file(mlxctl_home):
    config.set_value("model", "demo")
    text = config.config_path().read_text()
    assert 'model = "demo"' in text
    assert "# RAM budget of the prefix KV cache" in text
    assert config.load()["cache.ram_bytes"] == -1


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("port", "eighty", "an integer"),
        ("restart.backoff_max", "soon", "a number"),
        ("port", "0", "at least 1"),
    ],
)
def test_bad_values_name_the_key_and_type(mlxctl_home, key, value, expected):
    with pytest.raises(ConfigError) as info:
        config.set_value(key, value)
    assert repr(key) in str(info.value)
    assert expected in str(info.value)


def test_bad_type_in_the_file_names_the_key_path(mlxctl_home):
    config.config_path().write_text('[restart]\nliveness_timeout = "long"\n')
    with pytest.raises(ConfigError, match=r"'restart.liveness_timeout' expects a number"):
        config.load()


def test_unknown_keys_are_rejected(mlxctl_home):
    with pytest.raises(ConfigError, match="unknown config key 'prot'"):
        config.set_value("prot", "1")
    config.config_path().write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown config key 'colour'"):
        config.load()


def test_cli_roundtrip(mlxctl_home):
    runner = CliRunner()
    config.config_path().write_text(USER_FILE)
    result = runner.invoke(app, ["config", "set", "port", "9200"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["config", "get", "port"]).output.strip() == "9200"
    assert "# the port I like" in config.config_path().read_text()
    path = runner.invoke(app, ["config", "path"]).output.strip()
    assert path == str(mlxctl_home / "config.toml")
    shown = runner.invoke(app, ["config", "show"]).output
    assert "restart.backoff_max = 30.0" in shown
    bad = runner.invoke(app, ["config", "set", "port", "x"])
    assert bad.exit_code == exit_codes.FAILURE
    assert bad.output.startswith("error: ") and "port" in bad.output


def test_edit_runs_the_editor_and_validates(mlxctl_home, monkeypatch, tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^port = 8080/port = 7000/' \"$1\"\n")
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.delenv("VISUAL", raising=False)
    result = CliRunner().invoke(app, ["config", "edit"])
    assert result.exit_code == 0, result.output
    assert config.load()["port"] == 7000


def test_edit_reports_an_invalid_result(mlxctl_home, monkeypatch, tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nsed -i \'s/^backups = 3/backups = "many"/\' "$1"\n')
    editor.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(editor))
    monkeypatch.delenv("VISUAL", raising=False)
    result = CliRunner().invoke(app, ["config", "edit"])
    assert result.exit_code == exit_codes.FAILURE
    assert "logs.backups" in result.output and "hint: the file was saved as is" in result.output


def test_the_ram_cache_default_is_the_workers_ten_percent_of_ram():
    from mlxctl import config
    from server.edge.contract import worker_argv

    argv = worker_argv("m", "127.0.0.1", 1, **config.cache_options(config.load()))
    assert "--cache-ram-bytes" not in argv  # the worker's default: 10% of RAM (README)
    chosen = {**config.load(), "cache.ram_bytes": 1024}
    argv = worker_argv("m", "127.0.0.1", 1, **config.cache_options(chosen))
    assert argv[argv.index("--cache-ram-bytes") + 1] == "1024"


def test_the_distributed_layout_becomes_worker_flags_and_bad_values_are_refused(mlxctl_home):
    values = config.load()
    assert config.distributed_options(values) == {}  # one process: no launcher
    values["distributed.ranks"] = 2
    options = config.worker_options(values)
    assert options["ranks"] == 2 and options["backend"] == "ring"
    assert options["parallel"] == "tensor"
    values["distributed.parallel"] = "diagonal"
    with pytest.raises(ConfigError, match="distributed.parallel must be one of tensor, pipeline"):
        config.worker_options(values)
    # `start` refuses before it spawns anything, in one line.
    result = CliRunner().invoke(app, ["start", "--ranks", "2", "--backend", "carrier-pigeon"])
    assert result.exit_code == exit_codes.FAILURE
    assert result.output.startswith("error: ") and "distributed.backend" in result.output


def test_the_batch_turn_length_reaches_the_worker_and_a_too_short_one_is_refused(mlxctl_home):
    from server.edge.contract import worker_argv

    values = config.load()
    assert "--turn-seconds" in worker_argv("m", "127.0.0.1", 1, **config.worker_options(values))
    values["batch.turn_seconds"] = 0.25
    argv = worker_argv("m", "127.0.0.1", 1, **config.worker_options(values))
    assert argv[argv.index("--turn-seconds") + 1] == "0.25"
    result = CliRunner().invoke(app, ["config", "set", "batch.turn_seconds", "0.01"])
    assert result.exit_code != 0 and "batch.turn_seconds" in result.output


def test_prefill_streams_reach_the_worker_only_when_set(mlxctl_home):
    from server.edge.contract import worker_argv
    from server.flags import parse_args

    values = config.load()
    assert "--prefill-streams" not in worker_argv(
        "m", "127.0.0.1", 1, **config.worker_options(values)
    )
    values["batch.prefill_streams"] = 3
    argv = worker_argv("m", "127.0.0.1", 1, **config.worker_options(values))
    assert parse_args(argv[argv.index("-m") + 2 :]).prefill_streams == 3


def test_the_bounds_of_stored_responses_reach_the_worker(mlxctl_home):
    from server.edge.contract import worker_argv
    from server.flags import parse_args

    values = {**config.load(), "responses.max_count": 0, "responses.max_bytes": 4096}
    argv = worker_argv("m", "127.0.0.1", 1, **config.worker_options(values))
    args = parse_args(argv[argv.index("-m") + 2 :])  # what the worker reads of it
    assert (args.responses_max_count, args.responses_max_bytes) == (0, 4096)
