"""Val top-1 of a checkpoint on the shards, in one process on the CPU or one GPU.

    python -m pipeline.evaluate --checkpoint bn_inception_caffe data.shards=/data/shards
    python -m pipeline.evaluate --checkpoint runs/NAME/checkpoints/step-00012000 \\
        data.shards=/data/shards data.batch_size=256
    python -m pipeline.evaluate --checkpoint OUT data.shards=demo/shards \\
        data.backend=webdataset dist.device=cpu precision.autocast=float32   # no GPU

The checkpoint is a weights folder (`python -m pipeline.models import-caffe-port`, see
pipeline/models/weights.py) or a trainer checkpoint. Its config comes first: the
weights folder's model.* and data.mean/std over the defaults, or the whole config the
trainer saved; dotted overrides go on top. The val loader, the network and the
evaluation are the trainer's (pipeline/training/scoring.py), so the number is the one
training reports for these weights, over every val image once. Under torchrun the ranks
share the val set as in training.
"""

from __future__ import annotations

import argparse
import sys

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import load_config
from pipeline.data import ShardError
from pipeline.files import describe_os_error
from pipeline.models.weights import WeightsError
from pipeline.resolve import check_combination
from pipeline.training.scoring import describe, measure, read_weights


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipeline.evaluate",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--checkpoint", required=True,
                   help="a weights folder or a trainer checkpoint runs/NAME/checkpoints/step-N")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.shards=/data/shards")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        saved = read_weights(args.checkpoint)
        cfg = load_config(saved.config_file(), args.overrides)
        check_combination(cfg)
        metrics = measure(cfg, saved, args.checkpoint)
    except OSError as err:
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except (WeightsError, ShardError, ValueError, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(describe(metrics, args.checkpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
