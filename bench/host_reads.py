"""What a disk write of a KV entry costs the next prefill that attends over it.

    uv run python bench/host_reads.py [--layers 48] [--tokens 21000]

Builds one entry's worth of KV (per layer: K and V of shape (1, 4, tokens, 128), bf16 on a GPU,
float32 on the CPU as the worker runs there; the defaults are a ~21K-token entry of the
Qwen3-Coder-30B-A3B shape, 2.06 GB in bf16) and times the attention of a 300-token follow-up over
every layer: on fresh arrays, right after saving those arrays with `mx.save_safetensors` from
another thread (as the write-behind does), and after saving a copy of them instead (what the
worker does where `host_reads_move_buffers()` is true: MLX CUDA). On Apple silicon and the CPU
the host reads the same memory and the rows should match.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from server.edge.blas import reexec_with_openblas

    reexec_with_openblas()  # the CPU worker's BLAS (a no-op where none is installed)
    import mlx.core as mx
    from rich.console import Console
    from rich.table import Table

    from server.model.kv_state import host_reads_move_buffers

    p = argparse.ArgumentParser(prog="bench/host_reads.py", description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=48)
    p.add_argument("--tokens", type=int, default=21000)
    p.add_argument("--follow-up", type=int, default=300, help="new tokens attending (300)")
    args = p.parse_args(argv)
    shape = (1, 4, args.tokens, 128)
    dtype = mx.float32 if mx.default_device() == mx.cpu else mx.bfloat16
    q = mx.random.normal((1, 32, args.follow_up, 128)).astype(dtype)
    mx.eval(q)
    folder = Path(tempfile.mkdtemp(prefix="mlxctl-bench-host-reads-"))

    def entry() -> list:
        arrays = [mx.random.normal(shape).astype(dtype) for _ in range(2 * args.layers)]
        mx.eval(arrays)
        return arrays

    def attend(kv: list) -> float:
        t0 = time.perf_counter()
        out = [
            mx.fast.scaled_dot_product_attention(q, kv[2 * i], kv[2 * i + 1], scale=128**-0.5)
            for i in range(args.layers)
        ]
        mx.eval(out)
        return time.perf_counter() - t0

    def save(arrays: list, name: str) -> float:
        t0 = time.perf_counter()
        body = {str(i): a for i, a in enumerate(arrays)}
        writer = threading.Thread(target=mx.save_safetensors, args=(str(folder / name), body))
        writer.start()
        writer.join()
        return time.perf_counter() - t0

    rows: list[tuple[str, float | None, float | None, list[float]]] = []
    kv = entry()
    attend(kv)  # compile and warm up
    rows.append(("fresh arrays", None, None, [attend(kv) for _ in range(3)]))
    saved = save(kv, "own.safetensors")
    rows.append(("after saving them", None, saved, [attend(kv) for _ in range(3)]))
    kv = entry()
    attend(kv)
    t0 = time.perf_counter()
    copy = [a * 1 for a in kv]
    mx.eval(copy)
    copied = time.perf_counter() - t0
    saved = save(copy, "copy.safetensors")
    rows.append(("after saving a copy", copied, saved, [attend(kv) for _ in range(3)]))
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()

    gb = 2 * args.layers * 4 * args.tokens * 128 * dtype.size / 1e9
    table = Table(
        title=f"{args.follow_up}-token attention over a {gb:.2f} GB entry "
        f"({mx.default_device()}, host reads move buffers: {host_reads_move_buffers()})"
    )
    for col in ("arrays", "copy", "save", "1st attention", "2nd", "3rd"):
        table.add_column(col, justify="left" if col == "arrays" else "right")
    for label, copy_s, save_s, times in rows:
        table.add_row(
            label,
            "-" if copy_s is None else f"{copy_s * 1000:.1f} ms",
            "-" if save_s is None else f"{save_s:.2f} s",
            *(f"{t * 1000:.1f} ms" for t in times),
        )
    Console(highlight=False).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
