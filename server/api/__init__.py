"""HTTP on the event loop: the app, admin routes, protocol adapters. Never touches MLX."""
