"""Model tools.

    python -m pipeline.models summary [--model bn_inception] [--size 224] [--no-bn]
        [--act sigmoid] [--separable-stem] [--num-classes 1000]

`summary` prints each layer's output shape, parameters and multiply-adds at the size.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.models import MODELS, create_model
from pipeline.models.summary import summarize


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.models",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="per-layer shapes, parameters and multiply-adds")
    s.add_argument("--model", default="bn_inception", choices=sorted(MODELS))
    s.add_argument("--size", type=int, default=224, help="input height and width in pixels")
    s.add_argument("--no-bn", dest="bn", action="store_false", help="the Inception baseline")
    s.add_argument("--act", default="relu", choices=["relu", "sigmoid"])
    s.add_argument("--separable-stem", action="store_true", help="depthwise-separable 7x7 conv")
    s.add_argument("--num-classes", type=int, default=1000)
    args = p.parse_args(argv)
    model = create_model(args.model, num_classes=args.num_classes, bn=args.bn, act=args.act,
                         separable_stem=args.separable_stem)
    print(summarize(model, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
