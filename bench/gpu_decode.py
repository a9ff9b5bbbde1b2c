"""DALI decode + random-resized crop images/s on the GPU, by hw_decoder_load, for shards of
full-size photos and of photos re-encoded to a shorter side of 256 (the GPU check's DALI
phase).

    python bench/gpu_decode.py [--device cuda] [--images 4000] [--loads 0 0.65 0.9 0.99]
                               [--epochs 3] [--workers 4] [--json OUT.json]

Photo-sized JPEGs (500x375, ~110 KB, ImageNet's average), sharded as they are and with
`data_prep/shard.py --resize-shorter 256`; the trainer's DALI train loader at 224 px,
batch 128, per hw_decoder_load (the share of JPEGs sent to the A100/H100 hardware
decoder): one warm-up epoch, then the median of `--epochs` epoch rates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from loader_throughput import epoch_rate, shard
from photos import photo_tree

from pipeline.config import DataConfig
from pipeline.data import build_train_loader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--loads", type=float, nargs="+", default=[0.0, 0.65, 0.9, 0.99])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="DALI threads")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args()
    device, rows = torch.device(args.device), []
    with tempfile.TemporaryDirectory() as tmp:
        photo_tree(Path(tmp) / "src", args.images, val_per_class=1)
        for resize in (None, 256):
            shards = Path(tmp) / f"shards-{resize or 'full'}"
            shard(Path(tmp) / "src", shards, resize)
            for load in args.loads:
                cfg = DataConfig(shards=str(shards), image_size=args.size,
                                 batch_size=args.batch, num_workers=args.workers,
                                 hw_decoder_load=load, backend="dali")
                loader = build_train_loader(cfg, 0, 1, device)
                epoch_rate(loader)  # warm-up: page cache, nvJPEG's buffers
                rate = statistics.median(epoch_rate(loader) for _ in range(args.epochs))
                loader.close()
                rows.append({"shards": "full" if resize is None else f"shorter {resize}",
                             "hw_decoder_load": load, "img_per_s": rate})
                print(f"{rows[-1]['shards']:12s} hw_decoder_load {load:4.2f}: "
                      f"{rate:9.1f} img/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
