"""Val top-1 of a checkpoint on the shards, in one process on the CPU or one GPU.

    python -m pipeline.evaluate --checkpoint bn_inception_caffe data.shards=/data/shards
    python -m pipeline.evaluate --checkpoint runs/NAME/checkpoints/step-00012000 \\
        data.shards=/data/shards data.batch_size=256
    python -m pipeline.evaluate --checkpoint OUT data.shards=demo/shards \\
        data.backend=webdataset dist.device=cpu precision.autocast=float32   # no GPU

The checkpoint is a weights folder (`python -m pipeline.models import-caffe-port`, see
pipeline/training/weights.py) or a trainer checkpoint. Its config comes first: the
weights folder's model.* and data.mean/std over the defaults, or the whole config the
trainer saved; dotted overrides go on top. The val loader, the network and the
evaluation are the trainer's (build_val_loader, assembly.network, training.evaluate), so
the number is the one training reports for these weights, over every val image once.
Under torchrun the ranks share the val set as in training.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.distributed as dist
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from pipeline.config import Config, load_config
from pipeline.data import ShardError, build_val_loader
from pipeline.data.batches import TORCH_DTYPES
from pipeline.files import describe_os_error
from pipeline.launch.distributed import init_distributed, shutdown
from pipeline.resolve import check_combination
from pipeline.training.assembly import network
from pipeline.training.evaluate import evaluate
from pipeline.training.weights import SavedWeights, WeightsError, read_weights


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


def measure(cfg: Config, saved: SavedWeights, where: str = "the checkpoint") -> dict:
    """The trainer's val metrics for `saved`, plus val/seconds and val/images_per_s."""
    own_group = not dist.is_initialized()  # a caller's process group stays up
    env = init_distributed(cfg.dist)
    try:
        loader = build_val_loader(cfg.data, env.rank, env.world_size, env.device)
        model = load_network(cfg, loader.split.num_classes, saved, where)
        layout = torch.channels_last if cfg.data.channels_last else torch.contiguous_format
        model = model.to(env.device, memory_format=layout)
        autocast = cfg.precision.autocast
        started = time.perf_counter()
        metrics = evaluate(model, loader, None if autocast == "float32" else TORCH_DTYPES[autocast])
        seconds = time.perf_counter() - started
    finally:
        if own_group:
            shutdown(env)
    return {**metrics, "val/seconds": seconds, "val/images_per_s": metrics["val/images"] / seconds}


def load_network(cfg: Config, num_classes: int, saved: SavedWeights, where: str) -> nn.Module:
    """The network the config describes, with the saved weights: every key and shape."""
    model = network(cfg.model, num_classes)
    expected = model.state_dict().keys()
    missing = [k for k in expected if k not in saved.state]
    unexpected = [k for k in saved.state if k not in expected]
    if missing or unexpected:
        raise WeightsError(f"{where} ({saved.kind}) does not fit the network model.* describes: "
                           f"{len(missing)} keys missing (first: {missing[:3]}), "
                           f"{len(unexpected)} unexpected (first: {unexpected[:3]}); drop the "
                           "model.* overrides that change the network")
    try:
        model.load_state_dict(saved.state)
    except RuntimeError as err:  # a shape: "size mismatch for fc.weight: ..."
        lines = str(err).strip().splitlines()
        raise WeightsError(f"{where} ({saved.kind}) does not fit the network model.* "
                           f"describes: {lines[-1].strip()}") from err
    return model


def describe(metrics: dict, where: str) -> str:
    return (f"{where}: val top-1 {metrics['val/top1']:.4f}, top-5 {metrics['val/top5']:.4f}, "
            f"loss {metrics['val/loss']:.4f} over {metrics['val/images']} images; "
            f"{metrics['val/images_per_s']:.1f} images/s ({metrics['val/seconds']:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
