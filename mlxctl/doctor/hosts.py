"""`mlxctl doctor` across machines: the hostfile, SSH to each host, and on each the same mlx and
mlx-lm versions and the same model files as here (mlx.launch runs remote ranks over SSH with
this machine's python path and arguments)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from mlxctl.doctor.check import FAIL, PASS, Check

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SSH_TIMEOUT_S = 20
# Printed by each host's python: versions, and the model folder's weights and config (sizes).
_PROBE = """\
import json, sys
from importlib.metadata import version
from pathlib import Path
out = {}
for name in ("mlx", "mlx-lm"):
    try:
        out[name] = version(name)
    except Exception:
        out[name] = None
model = Path(sys.argv[1])
files = model.glob("*") if model.is_dir() else []
out["model"] = {p.name: p.stat().st_size for p in files if p.suffix in (".safetensors", ".json")}
print(json.dumps(out))
"""


def read_hosts(settings: dict) -> tuple[list[str], Check]:
    """The ssh names of the configured hosts (hostfile or `distributed.hosts`), and a check."""
    hostfile, hosts = settings["distributed.hostfile"], settings["distributed.hosts"]
    if hosts and not hostfile:
        names = [h.strip() for h in hosts.split(",") if h.strip()]
        return names, Check("hostfile", PASS, f"hosts {', '.join(names)} (no hostfile)")
    path = Path(hostfile).expanduser()
    try:
        data = json.loads(path.read_text())
        entries = data["hosts"] if isinstance(data, dict) else data
        names = [e["ssh"] if isinstance(e, dict) else str(e) for e in entries]
    except FileNotFoundError:
        return [], Check("hostfile", FAIL, f"{path} does not exist")
    except (ValueError, KeyError, TypeError) as exc:
        return [], Check("hostfile", FAIL, f"{path} is not an mlx hostfile: {exc}")
    if len(names) < 2:
        return names, Check("hostfile", FAIL, f"{path} lists {len(names)} host (2+ needed)")
    backend = data.get("backend") if isinstance(data, dict) else None
    detail = f"{path}: {len(names)} hosts" + (f", backend {backend}" if backend else "")
    return names, Check("hostfile", PASS, detail)


def probe(host: str, model: str) -> dict | str:
    """What `host` reports (versions, model files), or why it could not be asked."""
    command = [sys.executable, "-c", _PROBE, model]
    if host not in LOCAL_HOSTS:
        remote = " ".join(shlex.quote(part) for part in command)
        command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host, remote]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=SSH_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run {command[0]}: {exc}"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit {result.returncode}"
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"unexpected answer: {result.stdout.strip()[:80]}"


def check_host(host: str, model: str, here: dict) -> Check:
    """One host against this machine: reachable, same versions, same model files."""
    name = f"host {host}"
    there = probe(host, model)
    if isinstance(there, str):
        return Check(name, FAIL, f"unreachable over SSH: {there}")
    for package in ("mlx", "mlx-lm"):
        if there.get(package) != here.get(package):
            return Check(
                name, FAIL, f"{package} {there.get(package)} there, {here.get(package)} here"
            )
    if not there.get("model"):
        return Check(name, FAIL, f"no model files at {model}")
    if there["model"] != here.get("model"):
        differ = sorted(set(there["model"].items()) ^ set((here.get("model") or {}).items()))
        return Check(name, FAIL, f"model files differ from here: {differ[0][0]} ...")
    return Check(name, PASS, f"mlx {there['mlx']}, mlx-lm {there['mlx-lm']}, model files match")


def host_checks(settings: dict, model_path: str | None) -> list[Check]:
    """The across-machines checks, when the config names hosts ([] otherwise)."""
    if not settings["distributed.hostfile"] and not settings["distributed.hosts"]:
        return []
    hosts, first = read_hosts(settings)
    if first.status == FAIL or model_path is None:
        return [first]
    here = probe("127.0.0.1", model_path)
    if isinstance(here, str):
        return [first, Check("host 127.0.0.1", FAIL, here)]
    return [first, *(check_host(host, model_path, here) for host in hosts)]
