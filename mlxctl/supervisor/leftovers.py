"""What a supervisor killed by SIGKILL left behind: its workers (the default's and every
[models.NAME] one), their children, and temp files of writes cut short.
"""

from __future__ import annotations

from collections.abc import Callable

from mlxctl import paths
from mlxctl.supervisor import state as state_file
from mlxctl.system import identity, processes, statefile


def workers_named_in(
    previous: state_file.SupervisorState | None,
) -> list[identity.Identity | None]:
    """The workers a previous run's state file names: the default's and the [models.NAME] ones."""
    workers = [previous.worker_identity] if previous else []
    for row in previous.models if previous else []:
        if isinstance(row, dict) and not row.get("default"):
            workers.append(identity.Identity.from_dict(row.get("worker")))
    return workers


def stop_orphans(stop_timeout: float, log: Callable[[str], None]) -> None:
    for worker in workers_named_in(state_file.read_or_none()):
        orphan = identity.process_of(worker)
        if orphan is not None:  # else gone, or the pid is another's: never signal it
            log(f"stopping the worker left by a dead supervisor (pid {orphan.pid})")
            processes.stop_group(orphan, stop_timeout)
        swept = processes.sweep(worker)  # its children outlive it (external commands)
        if swept:
            log(f"killed {len(swept)} processes left behind by that worker: {swept}")


def remove_stale_temps(log: Callable[[str], None]) -> None:
    for folder in (paths.run_dir(), paths.home()):
        for tmp in statefile.clean_stale_temp(folder):
            log(f"removed {tmp.name}, left by a write that was killed")
