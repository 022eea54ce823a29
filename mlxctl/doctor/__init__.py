"""`mlxctl doctor`: what this machine (and the hosts of a distributed setup) can run.

check.py   Check, PASS / WARN / FAIL
local.py   this machine: Python, MLX (probed in a subprocess), OpenBLAS, disk, model, its chat
           template's tools, port, RAM
hosts.py   each host of the hostfile, probed over ssh
"""

from __future__ import annotations

from mlxctl import config
from mlxctl.doctor import hosts, local
from mlxctl.doctor.check import FAIL, PASS, WARN, Check

__all__ = ["FAIL", "PASS", "WARN", "Check", "run_checks"]


def run_checks(
    model: str | None = None, port: int | None = None, hostfile: str | None = None
) -> list[Check]:
    settings = config.load()
    if hostfile:
        settings["distributed.hostfile"] = hostfile
    checks = [local.check_python()]
    mlx_check, backend = local.probe_mlx()
    checks += [mlx_check, local.check_openblas(backend), local.check_disk(settings)]
    model_check, size = local.check_model(settings, model)
    folder = local.model_path(settings, model)
    checks.append(model_check)
    template = local.check_template(settings, folder)
    checks += [template] if template else []
    checks += [local.check_port(settings, port), local.check_ram(size)]
    return checks + hosts.host_checks(settings, folder)
