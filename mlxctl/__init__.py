"""mlxctl: supervise a local MLX model server for coding agents."""
