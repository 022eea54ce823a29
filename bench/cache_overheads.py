"""Time the cache's own overheads on one long real entry: `python bench/cache_overheads.py`.

Prints cold prefill, store, RAM lookups, flush, restore and lazy disk lookup for a prompt of
`--tokens` random ids on a tiny random-weight model (or `--model`). Not a test: numbers only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository: server, tests


def _timed(fn, repeat: int = 1):
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    from server.model.loading import load_model
    from server.prefix_cache.store import PrefixStore
    from server.testing.tiny_model import build_tiny_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--model", help="model folder (default: a tiny random-weight model)")
    ap.add_argument("--chunk", type=int, default=2048)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="kv-measure-"))
    model_dir = Path(args.model) if args.model else build_tiny_model(work / "tiny")
    model = load_model(str(model_dir)).model
    tokens = np.random.default_rng(0).integers(10, 8000, args.tokens).tolist()

    def prefill(cache, ids):
        ids = mx.array(ids)[None]
        for i in range(0, ids.shape[1], args.chunk):
            out = model(ids[:, i : i + args.chunk], cache=cache)
            mx.eval(out, [c.state for c in cache])
        return out

    rows = []
    cache = make_prompt_cache(model)
    t, _ = _timed(lambda: prefill(cache, tokens))
    rows.append(("cold prefill", t, f"{args.tokens} tokens, {args.tokens / t:.0f} tok/s"))

    def fresh():
        return PrefixStore.for_model(model, model_dir, disk_root=work / "kv", ram_bytes=8 << 30)

    pc = fresh()
    t, _ = _timed(lambda: pc.store(tokens, cache))
    nbytes = pc.stats()["ram"]["bytes"]
    rows.append(("store (RAM)", t, f"{nbytes / 2**20:.1f} MiB"))
    t, hit = _timed(lambda: pc.lookup(tokens), repeat=20)
    rows.append(("lookup, exact hit (RAM)", t, f"{hit.cached_tokens} cached"))
    diverging = tokens[: args.tokens // 2] + [1, 2, 3]
    t, hit = _timed(lambda: pc.lookup(diverging), repeat=20)
    rows.append(("lookup, trimmed hit (RAM)", t, f"{hit.cached_tokens} cached"))
    t, _ = _timed(lambda: pc.lookup([5, 6, 7] * 100), repeat=20)
    rows.append(("lookup, miss", t, "disk index searched too"))
    follow = tokens + np.random.default_rng(1).integers(10, 8000, 300).tolist()
    t, _ = _timed(lambda: prefill(pc.lookup(follow).cache, follow[args.tokens :]))
    rows.append(("warm follow-up (+300 tokens)", t, "lookup + prefill of the new tokens"))

    t, n = _timed(pc.flush)
    disk = pc.stats()["disk"]
    rows.append(("flush to disk", t, f"{n} file, {disk['bytes'] / 2**20:.1f} MiB, fsync + sha256"))
    t, restarted = _timed(fresh)
    rows.append(("open disk tier", t, "index + file headers"))
    t, n = _timed(restarted.restore)
    rows.append(("restore at start", t, f"{n} entry, checksum verified"))
    lazy = fresh()
    t, hit = _timed(lambda: lazy.lookup(follow))
    rows.append(("lookup, lazy load from disk", t, f"{hit.cached_tokens} cached ({hit.source})"))

    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'ms':>9}  notes")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds * 1000:>9.2f}  {note}")


if __name__ == "__main__":
    main()
