"""BN-Inception training images/s on synthetic batches, per batch size, torch.compile off and
on: the model's own speed, with the peak memory of each (the GPU check's torch phase).

    python bench/gpu_throughput.py [--device cuda] [--size 224] [--batches 64 128 256]
                                   [--compiled 256] [--steps 50] [--json OUT.json]

One rank, the trainer's own assembly (DDP engine, bf16 autocast, channels_last), one batch
from the loader kept on the device, WARMUP untimed steps (the compile happens there), then
`--steps` timed ones: every batch size without torch.compile, the `--compiled` ones with
it too (a compile per batch size takes minutes). Targets on one H100: >= 8,000 img/s
(floor), 12,000 (goal).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from loader_throughput import shard
from photos import photo_tree
from train_throughput import synthetic, timed_steps

from pipeline.config import load_config
from pipeline.dist.group import init_distributed, shutdown
from pipeline.training.assembly import assemble
from pipeline.training.optim import set_lr

FLOOR, GOAL = 8000, 12000


def measure(shards: Path, runs: Path, device: str, size: int, batch: int, compiled: bool,
            steps: int) -> dict:
    autocast = "bfloat16"
    cfg = load_config(None, [
        f"data.shards={shards}", f"data.image_size={size}", f"data.batch_size={batch}",
        "data.num_workers=1", f"precision.autocast={autocast}", "data.dtype=bfloat16",
        f"dist.device={device}", f"model.compile={str(compiled).lower()}", f"runs_dir={runs}"])
    env = init_distributed(cfg.dist)
    try:
        parts = assemble(cfg, env)
        engine = parts.engine
        set_lr(engine.optimizer, 0.01)
        images, labels = next(iter(parts.train))  # as the loader gives them: bf16, NHWC
        parts.train.close()
        if env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(env.device)
        started = time.perf_counter()
        rate = timed_steps(engine, synthetic(images, labels), steps, env.device)
        peak = (torch.cuda.max_memory_allocated(env.device) / 2**30
                if env.device.type == "cuda" else None)
        return {"batch": batch, "compile": compiled, "img_per_s": rate, "peak_gib": peak,
                "seconds": time.perf_counter() - started}
    finally:
        shutdown(env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--compiled", type=int, nargs="*", default=[256],
                   help="batch sizes also measured with torch.compile")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo_tree(Path(tmp) / "src", max(args.batches) // 10 * 10 + 100, val_per_class=1)
        shard(Path(tmp) / "src", Path(tmp) / "shards")
        runs = [(b, False) for b in args.batches] + [(b, True) for b in args.compiled]
        for batch, compiled in runs:
            rows.append(measure(Path(tmp) / "shards", Path(tmp) / "runs", args.device,
                                args.size, batch, compiled, args.steps))
            r = rows[-1]
            peak = "" if r["peak_gib"] is None else f", peak {r['peak_gib']:.1f} GiB"
            print(f"batch {batch:4d} compile {'on ' if compiled else 'off'}: "
                  f"{r['img_per_s']:9.1f} img/s{peak}", flush=True)
    best = max(r["img_per_s"] for r in rows)
    print(f"best {best:.0f} img/s at {args.size} px bf16 channels_last: "
          f"{best / FLOOR:.2f}x the floor ({FLOOR}), {best / GOAL:.2f}x the goal ({GOAL})")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "size": args.size,
                                         "rows": rows, "best": best, "floor": FLOOR,
                                         "goal": GOAL}, indent=1))


if __name__ == "__main__":
    main()
