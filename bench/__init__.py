"""The benchmarks: scripts (`uv run python bench/X.py`) that import one another as `bench.X`."""
