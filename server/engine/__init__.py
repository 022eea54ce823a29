"""The one MLX thread: queue, scheduler, prefill, the two decode paths, lockstep, watchdog."""
