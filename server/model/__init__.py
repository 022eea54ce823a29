"""mlx-lm and MLX glue below the engine: loading, ranks, KV state, attention, tool parsers."""
