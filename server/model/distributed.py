"""One model over several processes (ranks) with MLX's own runtime: the group, sharded loading,
and the few collectives the ranks use to agree (generation thread only).

`mlx.launch` starts one rank per host and sets MLX_RANK; `mx.distributed.init()` joins them.
Rank 0 serves HTTP; every rank runs the same scheduler in lockstep (server.engine.lockstep).
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger("server.distributed")

PARALLEL_MODES = ("tensor", "pipeline")


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    parallel: str = "tensor"

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def label(self) -> str:
        """What tells a shard's KV apart (the prefix cache's variant): e.g. tensor-2-rank-1."""
        return f"{self.parallel}-{self.size}-rank-{self.rank}" if self.distributed else ""


def launched_rank() -> int | None:
    """The rank mlx.launch gave this process (None: not launched by it); read before init."""
    value = os.environ.get("MLX_RANK", "")
    return int(value) if value.isdigit() else None


def join_group(parallel: str = "tensor") -> tuple[Any, RankInfo]:
    """`mx.distributed.init()` and what it says; (None, rank 0 of 1) for a lone process."""
    import mlx.core as mx

    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel must be one of {', '.join(PARALLEL_MODES)} (got {parallel!r})")
    group = mx.distributed.init()
    if group.size() <= 1:
        return None, RankInfo()
    return group, RankInfo(group.rank(), group.size(), parallel)


def collective_stream():
    """mlx-lm's generation stream: a collective queued behind the model's own (a batch step
    evaluates ahead) reaches the wire in the same order on every rank."""
    from mlx_lm.generate import generation_stream

    return generation_stream


def share(group: Any, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (None too): its pickle summed with zeros, as mlx_lm.server
    shares requests. Every rank must call it at the same point."""
    import mlx.core as mx
    import numpy as np

    data = pickle.dumps(obj) if group.rank() == 0 and obj is not None else b""
    stream = collective_stream()
    # item() of an integer array is an int (mlx types it any scalar).
    size = cast(int, mx.distributed.all_sum(mx.array(len(data)), group=group, stream=stream).item())
    if size == 0:
        return None
    buffer = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(size, dtype=np.uint8)
    total = mx.distributed.all_sum(mx.array(buffer), group=group, stream=stream)
    mx.eval(total)  # rank 0 too: a collective every rank must take part in
    return obj if group.rank() == 0 else pickle.loads(np.array(total).data)


def gather_objects(group: Any, obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    import mlx.core as mx
    import numpy as np

    data = pickle.dumps(obj)
    sizes = [row[0] for row in gather_ints(group, [len(data)])]
    padded = np.zeros(max(sizes), dtype=np.uint8)
    padded[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    gathered = mx.distributed.all_gather(
        mx.array(padded)[None], group=group, stream=collective_stream()
    )
    rows = np.array(gathered)
    return [pickle.loads(rows[r, :n].tobytes()) for r, n in enumerate(sizes)]


def rank_identity(rank: int) -> dict:
    """What status shows for a rank: its number, host name and pid."""
    import socket

    return {"rank": rank, "host": socket.gethostname(), "pid": os.getpid()}


def gather_ints(group: Any, values: list[int]) -> list[list[int]]:
    """Every rank's `values` (same length on all), in rank order, on every rank."""
    import mlx.core as mx

    local = mx.array([values], dtype=mx.int64)
    rows = mx.distributed.all_gather(local, group=group, stream=collective_stream())
    return cast(list[list[int]], rows.tolist())  # a 2-D array's tolist: a list of lists


def load_sharded(path: str, group: Any, parallel: str):
    """mlx-lm's `sharded_load`: this rank's tensor-parallel (`model.shard`) or pipeline
    (`model.model.pipeline`) part. Returns (model, tokenizer, config); ValueError when the
    model has no such split."""
    from mlx_lm.utils import sharded_load

    if parallel == "pipeline":
        try:
            return sharded_load(path, pipeline_group=group, return_config=True)
        except FileNotFoundError as exc:  # it picks each stage's files from the index
            needs = "pipeline loading needs model.safetensors.index.json"
            raise ValueError(f"{needs} ({exc})") from exc
    return sharded_load(path, tensor_group=group, return_config=True)
