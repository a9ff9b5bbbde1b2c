"""Training metrics between two log points, summed on the device and reduced once.

    meter = StepMeter(loader, run)
    meter.add_batch(loss, correct)                 # every micro-batch: no host sync
    record = meter.flush(step, optimizer)          # collective: all ranks, same steps

A record: step, epoch, train/loss and train/top1 (means over every rank's micro-batches),
lr, images_per_s (all ranks), data_wait_s (mean seconds a rank waited for a batch) and
data_wait_fraction (of the interval's wall time).
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from pipeline.data import TrainLoader
from pipeline.resolve import Derived


class StepMeter:
    def __init__(self, loader: TrainLoader, run: Derived):
        self.loader, self.run = loader, run
        self.sums: torch.Tensor | None = None  # loss, correct, samples, batches
        self.wait_s, self.started = 0.0, time.perf_counter()

    def add_batch(self, loss: torch.Tensor, correct: torch.Tensor) -> None:
        count = torch.full((), float(correct.numel()), dtype=torch.float64, device=loss.device)
        row = torch.stack([loss.double(), correct.sum(), count, torch.ones_like(count)])
        self.sums = row if self.sums is None else self.sums + row
        self.wait_s += self.loader.last_wait_s

    def flush(self, step: int, optimizer: torch.optim.Optimizer) -> dict:
        sums = torch.cat([self.sums, self.sums.new_tensor([self.wait_s])])
        dist.all_reduce(sums)
        loss, correct, samples, batches, wait = sums.tolist()
        elapsed = time.perf_counter() - self.started
        world = self.run.world_size
        record = {"step": step, "epoch": self.run.epochs_done(step),
                  "train/loss": loss / batches, "train/top1": correct / samples,
                  "lr": optimizer.param_groups[0]["lr"], "images_per_s": samples / elapsed,
                  "data_wait_s": wait / batches, "data_wait_fraction": wait / world / elapsed}
        self.sums, self.wait_s, self.started = None, 0.0, time.perf_counter()
        return record
