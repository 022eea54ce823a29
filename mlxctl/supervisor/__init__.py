"""The supervisor: a detached daemon that runs one worker with a restart policy and health checks.

The state machine (`machine.py`) only talks to the OS through `seam.py`, so it is unit-tested with
fakes; `daemon.py` wires it to real processes (`mlxctl.system`), the lock and the state file
(`state.py`, which the CLI reads too).
"""
