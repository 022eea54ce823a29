"""The worker's edge: stdlib-only modules the supervisor may import too (the launch contract,
OpenBLAS, atomic writes, the log file, model references, hosts, the model listing and the resume
wire names). Nothing here imports mlx, numpy or the rest of the worker."""
