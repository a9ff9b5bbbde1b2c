"""Run a function on W real gloo processes on this machine and collect what each returns.

    results = run_distributed(check_something, world_size=2, args=(batch,))

`fn(rank, world_size, *args)` must be importable (a module-level function); it runs with
the default process group initialized (gloo, FileStore rendezvous, so no port to race
for) and one intra-op thread, and its return value comes back through torch.save.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run_distributed(fn: Callable[..., Any], world_size: int, args: tuple = (),
                    collective_timeout_s: float = 30, timeout_s: float = 120) -> list[Any]:
    """Returns [fn's result on rank 0, rank 1, ...]; a worker's exception is re-raised here
    with its traceback. collective_timeout_s bounds each collective (a hang becomes an
    error); timeout_s bounds the whole run."""
    with tempfile.TemporaryDirectory(prefix="dist-test-") as tmp:
        context = mp.start_processes(
            _worker, args=(fn, world_size, tmp, args, collective_timeout_s),
            nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        while not context.join(timeout=0.5):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise TimeoutError(f"{fn.__name__} on {world_size} ranks ran past {timeout_s}s")
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False)
                for r in range(world_size)]


def _worker(rank: int, fn: Callable[..., Any], world_size: int, tmp: str, args: tuple,
            collective_timeout_s: float) -> None:
    torch.set_num_threads(1)  # W workers share 2 cores; oversubscription makes it crawl
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=world_size,
                            timeout=timedelta(seconds=collective_timeout_s))
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
