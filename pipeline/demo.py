"""The README's first command: the whole pipeline on a generated sample, on this machine.

    python -m pipeline.demo [--out demo] [--epochs 6]

Generates a small ILSVRC2012-shaped tree (with the real train set's defects), shards it
with data_prep/shard.py, verifies the shards with a second reader, then trains
BN-Inception on them on the CPU with configs/smoke_cpu.yaml (DALI's CPU backend, DDP on
one gloo rank, checkpoints, exact validation) into OUT/runs/smoke_cpu/.

OUT is the demo's own: it must be new, empty, or marked by an earlier demo (its
.pipeline-demo file), and a rerun replaces only what it made (imagenet/, shards/, runs/).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from data_prep import sample, shard
from pipeline.files import claim_folder
from pipeline.training.process import train_process

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "smoke_cpu.yaml"
PARTS = ("imagenet", "shards", "runs")  # what the demo writes into --out
MARK = ".pipeline-demo"  # says that --out is the demo's: its parts may be replaced


def claim(out: Path) -> str | None:
    """Makes `out` the demo's (its earlier parts removed), or says why it may not."""
    problem = claim_folder(out, MARK, "the demo")
    if problem is None:
        for part in PARTS:
            shutil.rmtree(out / part, ignore_errors=True)
    return problem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo"),
                   help="working folder: new or empty, or the demo's own from an earlier run")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--epochs", type=float, default=6, help="training epochs on the sample")
    args = p.parse_args(argv)
    problem = claim(args.out)
    if problem:
        print(f"demo: --out {problem}", file=sys.stderr)
        return 2
    source, shards, runs = (args.out / part for part in PARTS)

    print(f"== 1/4 generating a sample ILSVRC2012 tree in {source}")
    sample.main([str(source), "--classes", str(args.classes), "--bad"])
    print(f"== 2/4 sharding it into {shards} (the broken files are expected rejects)")
    allowed = str(len(sample.BROKEN))
    status = shard.main(["--source", str(source), "--out", str(shards), "--shard-size", "64",
                         "--max-rejects", allowed])
    if status:
        return status
    print("== 3/4 verifying the shards")
    status = shard.main(["--verify", str(shards)])
    if status:
        return status
    print(f"== 4/4 training BN-Inception on them (CPU, {CONFIG.name}) into {runs}")
    ended = train_process(str(CONFIG), [f"data.shards={shards}", f"runs_dir={runs}",
                                        f"schedule.epochs={args.epochs}"])
    if ended.ending == "done" and ended.validation:
        val = ended.validation
        print(f"done: val top-1 {val['val/top1']:.1%} on {val['val/images']} images "
              f"(chance {1 / args.classes:.0%}); run folder {ended.run_dir}")
    return ended.status


if __name__ == "__main__":
    sys.exit(main())
