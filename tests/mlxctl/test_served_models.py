"""`[models.NAME]` entries: validated with errors naming the key, names and alias globs matched."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mlxctl import config
from mlxctl.cli import register_commands
from mlxctl.errors import ConfigError
from mlxctl.models.served import DEFAULT, Catalog, ServedModel

app = register_commands()

MODELS = """\
model = "big"

[models.fast]
path = "mlx-community/tiny"
aliases = ["claude-haiku-*", "gpt-4o-mini"]
idle_unload = "15m"
speculative = "off"

[models.fast.cache]
ram_bytes = 1000

[models.coder]
path = "/models/coder"
pinned = true
idle_unload = "never"
"""


def test_entries_load_with_their_own_worker_keys(mlxctl_home):
    config.config_path().write_text(MODELS)
    models = config.load()["models"]
    fast, coder = models["fast"], models["coder"]
    assert fast.aliases == ("claude-haiku-*", "gpt-4o-mini") and fast.idle_unload == 900
    assert fast.settings == {"speculative": "off", "cache.ram_bytes": 1000}
    assert coder.pinned and coder.idle_unload == 0 and coder.path == "/models/coder"


def test_no_entries_is_an_empty_table(mlxctl_home):
    assert config.load()["models"] == {}


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('aliases = ["x"]', "models.bad.path"),
        ('path = "p"\naliases = 3', "models.bad.aliases"),
        ('path = "p"\nidle_unload = "soon"', "models.bad.idle_unload"),
        ('path = "p"\npinned = "yes"', "models.bad.pinned"),
        ('path = "p"\ncolour = "red"', "models.bad.colour"),
        ('path = "p"\n[models.bad.cache]\nram_bytes = "lots"', "models.bad.cache.ram_bytes"),
    ],
)
def test_a_bad_entry_is_an_error_naming_the_key(mlxctl_home, entry, named):
    config.config_path().write_text(f"[models.bad]\n{entry}\n")
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        config.load()


def test_config_show_lists_the_entries(mlxctl_home):
    config.config_path().write_text(MODELS)
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 0, shown.output
    assert 'models.fast.aliases = ["claude-haiku-*", "gpt-4o-mini"]' in shown.output
    as_json = json.loads(CliRunner().invoke(app, ["config", "show", "--json"]).output)
    assert as_json["models"]["coder"]["pinned"] is True


def test_config_show_refuses_a_bad_entry(mlxctl_home):
    config.config_path().write_text("[models.bad]\npath = 1\n")
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code != 0 and "models.bad.path" in shown.output


def catalog() -> Catalog:
    fast = ServedModel("fast", "p", ("claude-haiku-*", "gpt-4o-mini"))
    coder = ServedModel("coder", "q", ("claude-opus-*",))
    return Catalog(("big", "/models/big"), {"fast": fast, "coder": coder})


@pytest.mark.parametrize(
    ("requested", "route"),
    [
        ("fast", "fast"),
        ("claude-haiku-4-5-20251001", "fast"),
        ("gpt-4o-mini", "fast"),
        ("claude-opus-4-1", "coder"),
        ("coder", "coder"),
        ("claude-sonnet-4-5", DEFAULT),  # any other claude-* name: the default model
        ("big", DEFAULT),
        ("/models/big", DEFAULT),
        ("", DEFAULT),
        ("gpt-5", None),  # nobody's: a 404
        ("fast2", None),
    ],
)
def test_a_request_goes_to_the_name_or_alias_it_matches(requested, route):
    assert catalog().route_of(requested) == route


def test_claude_families_map_to_the_entries_whose_aliases_take_them():
    assert catalog().family_models() == {"opus": "coder", "haiku": "fast"}
