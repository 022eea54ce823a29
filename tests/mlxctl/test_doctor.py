"""`mlxctl doctor`: pass/warn/fail checks and a non-zero exit on a failure."""

from __future__ import annotations

import json
import socket
import sys

import pytest
from typer.testing import CliRunner

from mlxctl.cli import register_commands
from mlxctl.doctor import PASS, Check, local
from tests.fixtures_supervisor import free_port

app = register_commands()


@pytest.fixture
def quick_mlx(monkeypatch):
    """Skip the (slow) mlx subprocess probe where a test is about other checks."""
    monkeypatch.setattr(local, "probe_mlx", lambda: (Check("mlx", PASS, "stub"), "CPU"))


def checks_of(result) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(result.output)}


def test_all_good_with_the_real_mlx_probe(mlxctl_home, tiny_model_path):
    port = free_port()
    result = CliRunner().invoke(
        app, ["doctor", "--json", "--model", str(tiny_model_path), "--port", str(port)]
    )
    assert result.exit_code == 0, result.output
    checks = checks_of(result)
    assert list(checks) == ["python", "mlx", "openblas", "disk", "model", "template", "port", "ram"]
    assert checks["mlx"]["status"] == "pass"
    assert "backend" in checks["mlx"]["detail"]
    assert checks["port"]["status"] == "pass"
    assert checks["template"]["status"] == "pass"  # the tiny model's template has tools
    assert "MiB" in checks["ram"]["detail"] or "KiB" in checks["ram"]["detail"]
    if sys.platform.startswith("linux"):
        assert checks["openblas"]["status"] in ("pass", "warn")


def test_port_in_use_is_a_failure(mlxctl_home, tiny_model_path, quick_mlx):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = CliRunner().invoke(
            app, ["doctor", "--json", "--model", str(tiny_model_path), "--port", str(port)]
        )
    assert result.exit_code == 1
    check = checks_of(result)["port"]
    assert check["status"] == "fail" and str(port) in check["detail"]


def test_unresolvable_model_is_a_failure_and_missing_demo_a_warning(mlxctl_home, quick_mlx):
    runner = CliRunner()
    port = str(free_port())
    bad = runner.invoke(app, ["doctor", "--json", "--model", "no-such-model", "--port", port])
    assert bad.exit_code == 1
    assert checks_of(bad)["model"]["status"] == "fail"
    demo = runner.invoke(app, ["doctor", "--json", "--port", port])
    assert checks_of(demo)["model"]["status"] == "warn"


def test_human_table(mlxctl_home, quick_mlx):
    result = CliRunner().invoke(app, ["doctor", "--port", str(free_port())])
    assert "check" in result.output and "python" in result.output and "pass" in result.output


def test_ram_against_model_size():
    assert local.check_ram(None).status == "pass"
    assert local.check_ram(1024).status == "pass"
    assert local.check_ram(1 << 60).status == "fail"


def test_a_hostfile_is_checked_host_by_host(mlxctl_home, tiny_model_path, quick_mlx, tmp_path):
    # This machine passes (versions and model files against itself); a name that resolves
    # nowhere fails as unreachable over SSH; the port is free so only hosts can fail.
    hostfile = tmp_path / "ring.json"
    hosts = [{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}, {"ssh": "nohost.invalid", "ips": []}]
    hostfile.write_text(json.dumps({"backend": "ring", "hosts": hosts}))
    args = ["doctor", "--json", "--model", str(tiny_model_path), "--port", str(free_port())]
    result = CliRunner().invoke(app, [*args, "--hostfile", str(hostfile)])
    checks = checks_of(result)
    assert result.exit_code == 1
    assert checks["hostfile"]["status"] == "pass" and "2 hosts" in checks["hostfile"]["detail"]
    local = checks["host 127.0.0.1"]
    assert local["status"] == "pass" and "model files match" in local["detail"]
    remote = checks["host nohost.invalid"]
    assert remote["status"] == "fail" and "unreachable over SSH" in remote["detail"]


def test_a_broken_hostfile_is_a_failure(mlxctl_home, tiny_model_path, quick_mlx, tmp_path):
    hostfile = tmp_path / "ring.json"
    hostfile.write_text("{not json")
    result = CliRunner().invoke(
        app, ["doctor", "--json", "--model", str(tiny_model_path), "--hostfile", str(hostfile)]
    )
    check = checks_of(result)["hostfile"]
    assert (
        result.exit_code == 1
        and check["status"] == "fail"
        and "not an mlx hostfile" in check["detail"]
    )


def test_a_chat_template_without_tools_is_a_warning(mlxctl_home, tiny_model_path, tmp_path):
    from tests.worker.test_template_tools import no_tools_model

    plain = no_tools_model(tiny_model_path, tmp_path / "plain-chat")
    dropped = local.check_template({"model": None}, str(plain))
    assert dropped.status == "warn" and "drops tools" in dropped.detail
    assert local.check_template({"model": None}, str(tiny_model_path)).status == PASS
