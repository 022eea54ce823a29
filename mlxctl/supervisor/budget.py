"""The memory budget of several served models: what a model needs, and which idle ones to stop
(least recently used first) so the next one fits.

A model's need is planned, not sampled, so a choice never depends on when memory was read: its
weights on disk plus the RAM tier of its prefix cache (the worker's default: 10% of RAM).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from mlxctl.supervisor.memory import SOFT_FRACTION
from mlxctl.supervisor.switches import weights_bytes

CACHE_RAM_FRACTION = 0.10  # the worker's own default for cache.ram_bytes = -1


def default_budget(configured: int, total: int | None = None) -> int:
    """`memory.models_budget`, or the soft limit's share of RAM (a user's value wins)."""
    return configured or int((total or psutil.virtual_memory().total) * SOFT_FRACTION)


def planned_need(model: str, cache_ram_bytes: int, total: int | None = None) -> int:
    """Weights on disk (0 for a hub id not on disk) plus the cache's RAM tier."""
    ram = cache_ram_bytes
    if ram < 0:
        ram = int((total or psutil.virtual_memory().total) * CACHE_RAM_FRACTION)
    return (weights_bytes(model) or 0) + ram


@dataclass(frozen=True)
class Loaded:
    """A model whose worker holds memory now (running, starting or still stopping)."""

    name: str
    need: int
    last_used: float  # time.monotonic() of its last request (its start when none yet)
    evictable: bool  # idle, not pinned, not the default model


def make_room(need: int, budget: int, loaded: list[Loaded]) -> list[str] | None:
    """The models to stop, least recently used first, so `need` fits beside the rest;
    [] when it fits already; None when even stopping every idle one is not enough."""
    used = sum(m.need for m in loaded)
    if used + need <= budget:
        return []
    victims = []
    for model in sorted((m for m in loaded if m.evictable), key=lambda m: m.last_used):
        victims.append(model.name)
        used -= model.need
        if used + need <= budget:
            return victims
    return None
