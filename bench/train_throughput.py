"""Training images/s on shards (the whole pipeline) against synthetic in-memory batches.

    python bench/train_throughput.py [--device cpu|cuda] [--size 224] [--batch 128]
                                     [--steps 50] [--autocast bfloat16] [--engine ddp]
                                     [--workers 4] [--rounds 3] [--json OUT.json]

Builds the trainer's parts with the trainer's own assembly (one rank: config, DALI
train loader, BN-Inception with the synchronized-BN conversion, the DDP or DeepSpeed
engine), then times optimizer steps fed two ways, side by side in one process: batches
from the DALI loader over photo-sized shards (500x375 JPEGs, ~110 KB), and one batch
kept on the device. The ratio is what the data path costs the training loop (target on a
GPU: >= 0.95). A warm-up of a few steps per variant is not timed. On the CPU the loader
and the model share the same cores, so the ratio there is a lower bound. With --device
cuda it also prints peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from loader_throughput import shard
from photos import photo_tree

from pipeline.config import load_config
from pipeline.dist.group import init_distributed, shutdown
from pipeline.training.assembly import assemble
from pipeline.training.optim import set_lr

WARMUP = 3


def timed_steps(engine, batches, steps: int, device: torch.device) -> float:
    """Images/s over `steps` optimizer steps after WARMUP untimed ones."""
    images_done, started = 0, None
    for i, (images, labels) in enumerate(batches):
        if i == WARMUP:
            _sync(device)
            started = time.perf_counter()
        engine.forward_backward(images, labels, boundary=True)
        engine.step()
        if i >= WARMUP:
            images_done += images.shape[0]
        if i == WARMUP + steps - 1:
            break
    _sync(device)
    return images_done / (time.perf_counter() - started)


def synthetic(images: torch.Tensor, labels: torch.Tensor):
    while True:
        yield images, labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=None, help="224 on a GPU, 128 on the CPU")
    p.add_argument("--batch", type=int, default=None, help="128 on a GPU, 16 on the CPU")
    p.add_argument("--steps", type=int, default=None, help="50 on a GPU, 8 on the CPU")
    p.add_argument("--autocast", default=None, help="bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--engine", default="ddp", choices=["ddp", "deepspeed"])
    p.add_argument("--workers", type=int, default=4, help="DALI threads")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args()
    gpu = args.device == "cuda"
    size, batch = args.size or (224 if gpu else 128), args.batch or (128 if gpu else 16)
    steps, autocast = args.steps or (50 if gpu else 8), args.autocast or (
        "bfloat16" if gpu else "float32")
    images_needed = batch * (steps + WARMUP) * 2  # an epoch outlasts a round
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "src", Path(tmp) / "shards"
        photo_tree(root, max(1000, images_needed // 10 * 10 + 10), val_per_class=1)
        shard(root, out)
        cfg = load_config(None, [
            f"data.shards={out}", f"data.image_size={size}", f"data.batch_size={batch}",
            f"data.num_workers={args.workers}", "data.shuffle_buffer=512",
            f"data.dtype={'bfloat16' if autocast == 'bfloat16' else 'float32'}",
            f"precision.autocast={autocast}", f"dist.device={args.device}",
            f"dist.engine={args.engine}", "runs_dir=" + str(Path(tmp) / "runs")])
        env = init_distributed(cfg.dist)
        parts = assemble(cfg, env)
        loader, engine = parts.train, parts.engine
        set_lr(engine.optimizer, 0.01)
        images, labels = next(iter(loader))
        measured = {"synthetic": [], "shards": []}
        for epoch in range(1, args.rounds + 1):  # alternated, so drift hits both alike
            measured["synthetic"].append(
                timed_steps(engine, synthetic(images, labels), steps, env.device))
            loader.set_epoch(epoch)
            measured["shards"].append(timed_steps(engine, iter(loader), steps, env.device))
        rates = {name: statistics.median(values) for name, values in measured.items()}
        shutdown(env)
    print(f"BN-Inception, {args.engine}, {size} px, batch {batch}, {autocast}, "
          f"channels_last, {args.workers} DALI threads, device {env.device}: median of "
          f"{args.rounds} alternating rounds of {steps} timed steps (after {WARMUP})")
    for name, label in (("synthetic", "one batch kept on the device"),
                        ("shards", "DALI loader over the shards")):
        print(f"  {label}".ljust(36) + f"{rates[name]:9.1f} img/s")
    print(f"shards / synthetic: {rates['shards'] / rates['synthetic']:.2f}x "
          "(target >= 0.95 on a GPU)")
    peak = torch.cuda.max_memory_allocated(env.device) / 2**30 if gpu else None
    if gpu:
        print(f"peak GPU memory: {peak:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps({
            "device": args.device, "size": size, "batch": batch, "autocast": autocast,
            "synthetic": rates["synthetic"], "shards": rates["shards"],
            "ratio": rates["shards"] / rates["synthetic"], "peak_gib": peak}, indent=1))


if __name__ == "__main__":
    main()
