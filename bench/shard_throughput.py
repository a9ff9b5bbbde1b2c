"""Images/s of data_prep/shard.py in copy mode, side by side with two baselines.

    python bench/shard_throughput.py [--images 12000] [--workers 2] [--repeats 3]

On one tree of photo-sized JPEGs (500x375, ~110 KB, the ImageNet average) with a warm
page cache, in one run: `tar cf` of the tree (the I/O limit), a single-process
webdataset ShardWriter loop (what most conversion scripts do), and shard.py. Prints the
median images/s of each and shard.py's ratio to both. Targets on 2 cores: >= 0.5x tar,
>= 1.5x the ShardWriter loop.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import webdataset as wds
from photos import photo_tree

REPO = Path(__file__).resolve().parents[1]


def run_tar(root: Path, out: Path) -> None:
    subprocess.run(["tar", "cf", str(out / "all.tar"), "-C", str(root), "train"], check=True)


def run_shardwriter(root: Path, out: Path) -> None:
    wnids = sorted(p.name for p in (root / "train").iterdir())
    files = sorted((root / "train").rglob("*.JPEG"))
    with wds.ShardWriter(str(out / "train-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for path in files:
            wnid = path.parent.name
            sink.write({"__key__": path.stem, "jpg": path.read_bytes(),
                        "cls": str(wnids.index(wnid)).encode(),
                        "json": json.dumps({"wnid": wnid, "source": str(path)}).encode()})


def run_shard_py(root: Path, out: Path, workers: int) -> None:
    command = [sys.executable, str(REPO / "data_prep" / "shard.py"), "--source", str(root),
               "--out", str(out), "--splits", "train", "--workers", str(workers)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    fn(out)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=12000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "src", Path(tmp) / "out"
        mean_bytes = photo_tree(root, args.images)
        subprocess.run(["tar", "cf", "/dev/null", "-C", str(root), "train"], check=True)
        runners = {
            "tar cf": lambda o: run_tar(root, o),
            "webdataset ShardWriter loop": lambda o: run_shardwriter(root, o),
            f"shard.py --workers {args.workers}": lambda o: run_shard_py(root, o, args.workers),
        }
        rates = {}
        for name, fn in runners.items():
            seconds = statistics.median(timed(fn, out) for _ in range(args.repeats))
            rates[name] = args.images / seconds
    print(f"{args.images} images of {mean_bytes / 1e3:.0f} KB (500x375), warm page cache, "
          f"median of {args.repeats}")
    for name, rate in rates.items():
        print(f"  {name:32s} {rate:8.0f} img/s")
    ours = rates[f"shard.py --workers {args.workers}"]
    print(f"shard.py / tar cf:          {ours / rates['tar cf']:.2f}x (target >= 0.5)")
    print(f"shard.py / ShardWriter loop: {ours / rates['webdataset ShardWriter loop']:.2f}x "
          "(target >= 1.5)")


if __name__ == "__main__":
    main()
