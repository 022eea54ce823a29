"""The service's address and the model a release records, decided from the state file."""

from __future__ import annotations

from mlxctl.releases.model_ref import reference
from mlxctl.supervisor import state as state_file

SETTINGS = {"host": "127.0.0.1", "port": 8080}


def record(host: str, port: int, configured: str | None) -> None:
    from mlxctl import paths

    paths.ensure_private_dir(paths.run_dir())
    saved = state_file.SupervisorState(host=host, port=port, configured_address=configured)
    state_file.write(saved)


def test_the_address_the_service_ran_on_is_kept_until_the_config_changes():
    assert state_file.service_address(SETTINGS, None, None) == ("127.0.0.1", 8080)
    record("127.0.0.1", 18555, "127.0.0.1:8080")
    assert state_file.service_address(SETTINGS, None, None) == ("127.0.0.1", 18555)
    assert state_file.service_address(SETTINGS, None, 9000) == ("127.0.0.1", 9000)
    moved = {**SETTINGS, "port": 8181}  # the user edited the config's port
    assert state_file.service_address(moved, None, None) == ("127.0.0.1", 8181)
    record("127.0.0.1", 18555, None)  # a state file from before the address was recorded
    assert state_file.service_address(SETTINGS, None, None) == ("127.0.0.1", 8080)


def test_a_release_records_a_model_reference_that_resolves(tmp_path, monkeypatch):
    folder = tmp_path / "demo"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert reference("demo") == str(folder)  # not installed here: the folder, absolute
    assert reference("./demo") == str(folder)
    assert reference("somewhere", resolved=str(folder)) == str(folder)
    assert reference("org/model") == "org/model"  # a hub id stays
