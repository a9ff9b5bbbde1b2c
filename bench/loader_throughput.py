"""Train-loader images/s at 224 px: DALI (CPU here) against the webdataset fallback.

    python bench/loader_throughput.py [--images 2000] [--workers 2] [--batch 64] [--epochs 5]
                                      [--device cpu|cuda] [--train-antialias]

Writes photo-sized JPEGs (500x375, ~110 KB like ImageNet's average; 20 distinct images
per class repeated), shards them with data_prep/shard.py, then runs both train loaders of
pipeline/data on the same shards, the same cores (`--workers` DALI threads or DataLoader
processes) and the same config: random-resized crop, flip, normalize to float32
channels_last, the train resize as the config's default (`--train-antialias` turns on
DALI's antialiasing; the fallback always antialiases). One warm-up epoch each (page
cache, start-up), then the backends take turns, an epoch at a time, so that a change in
the machine's load hits both; each rate is the median over `--epochs` epochs, and the
batches are only consumed. With `--device cuda` DALI decodes on the GPU ("mixed") and
the fallback normalizes there. Target: DALI >= 1.5x the fallback.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from photos import photo_tree

from pipeline.config import DataConfig
from pipeline.data import build_train_loader

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("dali", "webdataset")


def shard(root: Path, out: Path, resize_shorter: int | None = None) -> None:
    command = [sys.executable, str(REPO / "data_prep" / "shard.py"), "--source", str(root),
               "--out", str(out), "--shard-size", "250", "--workers", "2",
               *(["--resize-shorter", str(resize_shorter)] if resize_shorter else [])]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def epoch_rate(loader) -> float:
    """Images/s of one epoch, from asking for the first batch to the last one."""
    started, images = time.perf_counter(), 0
    for batch, _ in loader:
        images += batch.shape[0]
    if batch.is_cuda:
        torch.cuda.synchronize(batch.device)  # the GPU work is part of the rate
    return images / (time.perf_counter() - started)


def measure(base: DataConfig, epochs: int, device: torch.device) -> dict[str, list[float]]:
    """Epoch rates of each backend, taking turns after one warm-up epoch each."""
    loaders = {name: build_train_loader(replace(base, backend=name), 0, 1, device)
               for name in BACKENDS}
    for loader in loaders.values():
        epoch_rate(loader)  # page cache, worker start-up, allocator warm-up
    rates: dict[str, list[float]] = {name: [] for name in BACKENDS}
    for _ in range(epochs):
        for name, loader in loaders.items():
            rates[name].append(epoch_rate(loader))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu, or cuda for DALI's GPU decoding")
    p.add_argument("--train-antialias", action="store_true",
                   help="antialias DALI's train resize (data.train_antialias)")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)  # the loop only consumes; leave the cores to the loaders
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "src", Path(tmp) / "shards"
        mean_bytes = photo_tree(root, args.images, val_per_class=1)
        shard(root, out)
        base = DataConfig(shards=str(out), image_size=224, batch_size=args.batch,
                          num_workers=args.workers, shuffle_buffer=512, dtype="float32",
                          channels_last=True, train_antialias=args.train_antialias)
        rates = measure(base, args.epochs, device)
    dali, fallback = (statistics.median(rates[name]) for name in BACKENDS)
    turns = [d / f for d, f in zip(rates["dali"], rates["webdataset"], strict=True)]
    print(f"{args.images} JPEGs of {mean_bytes / 1e3:.0f} KB (500x375) -> 224 px train crops, "
          f"batch {args.batch}, {args.workers} threads/workers, DALI train antialias "
          f"{'on' if args.train_antialias else 'off'}, median of {args.epochs} epochs each "
          "after a warm-up epoch")
    decoder = "CPU backend" if device.type == "cpu" else "GPU decoding"
    print(f"  DALI ({decoder})".ljust(36) + f"{dali:8.0f} img/s")
    print("  webdataset + DataLoader workers".ljust(36) + f"{fallback:8.0f} img/s")
    print(f"DALI / webdataset: {dali / fallback:.2f}x (target >= 1.5); epoch by epoch "
          f"{min(turns):.2f}x-{max(turns):.2f}x")


if __name__ == "__main__":
    main()
