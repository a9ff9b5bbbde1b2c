"""The README's first command: the whole pipeline on a generated sample, on this machine.

    python -m pipeline.demo [--out demo]

Generates a small ILSVRC2012-shaped tree (with the real train set's defects), shards
it with data_prep/shard.py and verifies the shards with a second reader. Training on
the shards joins here as the trainer lands.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from data_prep import sample, shard


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (replaced)")
    p.add_argument("--classes", type=int, default=10)
    args = p.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    source, shards = args.out / "imagenet", args.out / "shards"

    print(f"== 1/3 generating a sample ILSVRC2012 tree in {source}")
    sample.main([str(source), "--classes", str(args.classes), "--bad"])
    print(f"== 2/3 sharding it into {shards} (the broken files are expected rejects)")
    allowed = str(len(sample.BROKEN))
    status = shard.main(["--source", str(source), "--out", str(shards), "--shard-size", "64",
                         "--max-rejects", allowed])
    if status:
        return status
    print("== 3/3 verifying the shards")
    return shard.main(["--verify", str(shards)])


if __name__ == "__main__":
    sys.exit(main())
