"""Several models by name, wired into the daemon: the fleet beside the default's worker, its
memory budget, and the front door's catalog of names and hold for a first load.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from mlxctl.front_door.serve import FrontDoor
from mlxctl.models.served import Catalog
from mlxctl.supervisor.budget import default_budget, planned_need
from mlxctl.supervisor.fleet import Default, Fleet
from mlxctl.supervisor.machine import Supervisor, Timing
from mlxctl.supervisor.policy import RestartPolicy


def open_fleet(settings: dict[str, Any], args: argparse.Namespace, sup: Supervisor,
               policy: RestartPolicy, timing: Timing, door: FrontDoor,
               log: Callable[[str], None]) -> Fleet:  # fmt: skip
    """The [models.NAME] workers, started on demand, and the front door told which names go
    where; `sup` serves the default model (`args`), counted against the budget."""
    need = planned_need(args.model, settings["cache.ram_bytes"])
    default = Default(sup, need, args.model_name, args.model)
    budget = default_budget(settings["memory.models_budget"])
    models = settings["models"]
    fleet = Fleet(models, settings, policy, timing, door.routes, default, budget, log)
    names = (default.name, default.path, os.path.basename(default.path.rstrip("/")))
    door.app.catalog = Catalog(tuple(dict.fromkeys(n for n in names if n)), models)
    longest = [w.sup.timing.startup_timeout for w in fleet.workers.values()]
    door.app.hold_seconds = max([door.app.hold_seconds, *longest])  # a first load may be long
    if fleet.workers:
        log(f"models served by name: {', '.join(fleet.workers)} (each started on its first "
            f"request; memory budget {budget >> 20} MiB)")  # fmt: skip
    return fleet
