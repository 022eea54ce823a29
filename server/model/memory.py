"""What MLX may use on its device and what it holds now (generation thread only).

The device is the GPU on Metal (its recommended working set) and on CUDA (the card's memory less
what other processes hold, not the host's RAM); on the CPU it is the host's RAM. What MLX holds
is its live arrays (weights, KV caches, the prefix cache's RAM tier) plus its buffer pool, which
it keeps for reuse and which a CUDA allocation cannot take back by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

# Keep this much of the device free of planned use: activations, kernels' scratch, fragmentation.
HEADROOM = 0.10


@dataclass(frozen=True)
class DeviceMemory:
    limit: int  # bytes MLX may use on its device
    source: str  # where `limit` comes from (a device_info key, or "ram")
    active: int  # live arrays
    pool: int  # MLX's buffer pool: freed buffers kept for reuse

    @property
    def plannable(self) -> int:
        """What may still be planned for: the limit less headroom, live arrays and the pool."""
        return int(self.limit * (1 - HEADROOM)) - self.active - self.pool


def device_limit() -> tuple[int, str]:
    """Bytes MLX may use on its device, and the source of the figure."""
    import mlx.core as mx
    import psutil

    try:
        info = mx.device_info()
    except Exception:
        info = {}
    total, free = info.get("total_memory"), info.get("free_memory")
    if isinstance(total, int) and isinstance(free, int) and total > 0:
        # CUDA: the card less what other processes hold (free counts ours as used: add it back).
        ours = int(mx.get_active_memory()) + int(mx.get_cache_memory())
        return min(total, free + ours), "total_memory less other processes"
    # Metal's recommended working set; older CUDA builds' card memory.
    for key in ("max_recommended_working_set_size", "memory_size"):
        value = info.get(key)
        if isinstance(value, int) and value > 0:
            return value, key
    return int(psutil.virtual_memory().total), "ram"


def snapshot(limit: tuple[int, str] | None = None) -> DeviceMemory:
    import mlx.core as mx

    size, source = limit or device_limit()
    return DeviceMemory(size, source, int(mx.get_active_memory()), int(mx.get_cache_memory()))


def release_pool() -> int:
    """Give MLX's buffer pool back to the device; the bytes it held."""
    import mlx.core as mx

    held = int(mx.get_cache_memory())
    mx.clear_cache()
    return held
