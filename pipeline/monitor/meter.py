"""Training metrics between two log points, summed on the device and gathered once.

    meter = StepMeter(run, env, hosts, start_step)
    meter.add_batch(loss, correct, wait_s)         # every micro-batch: no host sync
    meter.add_step(grad_norm)                      # every optimizer step (norm or None)
    meter.exclude("checkpoint_s", seconds)         # time that was not training (a save)
    record, spread = meter.flush(step, images_seen, optimizer)   # collective, all ranks

A record: step, epoch, images_seen, train/loss and train/top1 (means over every rank's
micro-batches), lr, grad_norm (of the last step, when the engine measured it),
images_per_s (all ranks) and images_per_s_per_gpu, step_time_s (wall seconds per step),
data_wait_s (seconds a rank waited for data per step, the mean rank; with accumulation
a step's several batches), data_wait_fraction (of the wall time), gpu_mem_peak_gb (the
largest rank's peak allocation in the interval, on GPUs), and the spread over ranks:
ranks/step_time_s_{min,median,max}, ranks/data_wait_s_{min,median,max} (seconds per
step), ranks/slowest and ranks/slowest_host; checkpoint_s (seconds of checkpoint saves in
the interval, rank 0's), when there was one: that time is left out of images_per_s,
step_time_s and data_wait_fraction, so a save does not read as a throughput drop.

Which rank held the others up: every rank's step ends in the same all-reduce, so the wall
time per step is nearly the same on all of them; the rank that waited longest for its
data is the one the others waited for in that all-reduce. `ranks/slowest` names it (a
slow GPU instead shows as a longer step everywhere with no rank waiting for data).
The per-rank numbers travel in the one all_gather the interval's sums need anyway.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.dist.group import DistEnv
from pipeline.resolve import Derived

# The per-rank row gathered at a log point.
LOSS, CORRECT, SAMPLES, BATCHES, WAIT, ELAPSED, STEPS, MEMORY = range(8)


@dataclass(frozen=True)
class RankSpread:
    """Each rank's seconds per step in one interval, for the alerts."""

    step_time_s: list[float]
    data_wait_s: list[float]


class StepMeter:
    def __init__(self, run: Derived, env: DistEnv, hosts: list[str], start_step: int):
        self.run, self.env, self.hosts = run, env, hosts
        self.cuda = env.device.type == "cuda"
        self.last_step = start_step
        self._reset()

    def _reset(self) -> None:
        self.sums: torch.Tensor | None = None  # loss, correct, samples, batches
        self.wait_s, self.grad_norm = 0.0, None
        self.excluded: dict[str, float] = {}  # seconds of other work, by its metric
        self.started = time.perf_counter()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.env.device)

    def add_batch(self, loss: torch.Tensor, correct: torch.Tensor, wait_s: float) -> None:
        """`wait_s`: seconds the loop waited for this batch (the loader's last_wait_s)."""
        count = torch.full((), float(correct.numel()), dtype=torch.float64, device=loss.device)
        row = torch.stack([loss.double(), correct.sum(), count, torch.ones_like(count)])
        self.sums = row if self.sums is None else self.sums + row
        self.wait_s += wait_s

    def add_step(self, grad_norm: torch.Tensor | None) -> None:
        if grad_norm is not None:
            self.grad_norm = grad_norm

    def exclude(self, key: str, seconds: float) -> None:
        """`seconds` of this interval went to other work: out of the timing, logged as `key`."""
        self.excluded[key] = self.excluded.get(key, 0.0) + seconds

    def flush(self, step: int, images_seen: int,
              optimizer: torch.optim.Optimizer) -> tuple[dict, RankSpread]:
        elapsed = time.perf_counter() - self.started - sum(self.excluded.values())
        steps = step - self.last_step
        memory = torch.cuda.max_memory_allocated(self.env.device) if self.cuda else 0
        mine = torch.cat([self.sums, self.sums.new_tensor([self.wait_s, elapsed, steps,
                                                           memory])])
        rows = [torch.empty_like(mine) for _ in range(self.env.world_size)]
        dist.all_gather(rows, mine)
        table = torch.stack(rows).cpu()
        loss, correct, samples, batches = table[:, :WAIT].sum(0).tolist()
        wall = table[:, ELAPSED].max().item()
        waits = (table[:, WAIT] / steps).tolist()
        step_times = (table[:, ELAPSED] / steps).tolist()
        slowest = max(range(len(waits)), key=waits.__getitem__)
        record = {
            "step": step, "epoch": self.run.epochs_done(step), "images_seen": images_seen,
            "train/loss": loss / batches, "train/top1": correct / samples,
            "lr": optimizer.param_groups[0]["lr"],
            **({"grad_norm": float(self.grad_norm)} if self.grad_norm is not None else {}),
            "images_per_s": samples / wall,
            "images_per_s_per_gpu": samples / wall / self.env.world_size,
            "step_time_s": wall / steps,
            "data_wait_s": table[:, WAIT].sum().item() / self.env.world_size / steps,
            "data_wait_fraction": table[:, WAIT].sum().item() / self.env.world_size / wall,
            **({"gpu_mem_peak_gb": table[:, MEMORY].max().item() / 2**30} if self.cuda else {}),
            **_spread("ranks/step_time_s", step_times), **_spread("ranks/data_wait_s", waits),
            "ranks/slowest": slowest, "ranks/slowest_host": self.hosts[slowest],
            **self.excluded,
        }
        self.last_step = step
        self._reset()
        return record, RankSpread(step_times, waits)


def _spread(name: str, values: list[float]) -> dict[str, float]:
    return {f"{name}_min": min(values), f"{name}_median": statistics.median(values),
            f"{name}_max": max(values)}


def gather_hosts(env: DistEnv, host: str) -> list[str]:
    """Every rank's node name, rank-ordered (once at start; all ranks call it)."""
    hosts: list[str | None] = [None] * env.world_size
    dist.all_gather_object(hosts, host)
    return [str(h) for h in hosts]
