"""mlx-lm's sampler for a request's sampling settings (runs on the generation thread)."""

from __future__ import annotations

from server.request import Sampling


def make_request_sampler(s: Sampling):
    """mlx-lm's sampler for these settings, after seeding MLX's generator when a seed is given."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    if s.seed is not None:
        mx.random.seed(s.seed)
    return make_sampler(temp=s.temperature, top_p=s.top_p if s.top_p < 1.0 else 0.0, top_k=s.top_k)
