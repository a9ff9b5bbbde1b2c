"""Model tools.

    python -m pipeline.models summary [--model bn_inception] [--size 224] [--no-bn]
        [--act sigmoid] [--separable-stem] [--num-classes 1000]
    python -m pipeline.models import-caffe-port FILE OUT [--mean R G B] [--std R G B]

`summary` prints each layer's output shape, parameters and multiply-adds at the size.
`import-caffe-port` converts the BN-Inception port of the authors' Caffe release
(pretrainedmodels' bn_inception-239d2248.pth) into the weights folder OUT, for RGB input
normalized by --mean/--std (default: data.mean/std's defaults); then
`python -m pipeline.evaluate --checkpoint OUT data.shards=...` measures it
(pipeline/models/caffe_port.py, docs/model.md).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.config import IMAGENET_MEAN, IMAGENET_STD
from pipeline.files import describe_os_error
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
    c = sub.add_parser("import-caffe-port", help="the Caffe BN-Inception port as a checkpoint")
    c.add_argument("file", help="the port's state dict (plain or under 'state_dict')")
    c.add_argument("out", help="the weights folder to write (must not exist)")
    c.add_argument("--mean", type=float, nargs=3, default=IMAGENET_MEAN, metavar=("R", "G", "B"),
                   help="the data.mean evaluation normalizes with (0-1 scale)")
    c.add_argument("--std", type=float, nargs=3, default=IMAGENET_STD, metavar=("R", "G", "B"),
                   help="the data.std evaluation normalizes with (0-1 scale)")
    args = p.parse_args(argv)
    if args.command == "import-caffe-port":
        return import_caffe_port(args)
    model = create_model(args.model, num_classes=args.num_classes, bn=args.bn, act=args.act,
                         separable_stem=args.separable_stem)
    print(summarize(model, args.size))
    return 0


def import_caffe_port(args: argparse.Namespace) -> int:
    from pipeline.models import caffe_port  # pulls in the checkpoint code: only when asked
    from pipeline.models.weights import WeightsError

    try:
        out = caffe_port.import_caffe_port(args.file, args.out, tuple(args.mean), tuple(args.std))
    except OSError as err:
        print(f"import-caffe-port: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except (caffe_port.PortError, WeightsError) as err:
        print(f"import-caffe-port: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (model.pt, model.json) for RGB input normalized by mean "
          f"{list(args.mean)}, std {list(args.std)}; measure it with\n"
          f"  python -m pipeline.evaluate --checkpoint {out} data.shards=SHARDS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
