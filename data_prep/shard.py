"""Turns an ILSVRC2012 tree into WebDataset tar shards that DALI reads directly.

    python data_prep/shard.py --source /data/imagenet --out /data/imagenet-shards
    python data_prep/shard.py --source ... --out ... --submit slurm --slurm-tasks 32
    python data_prep/shard.py --verify /data/imagenet-shards

Writes OUT/classes.json and, per split, OUT/<split>/<split>-NNNNNN.{tar,idx}, records/
and manifest.json. Rerun the same command after an interruption: finished shards are
checked and kept. Exit status 1 when more inputs were rejected than --max-rejects.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from data_prep import imagenet
from data_prep.images import EncodeOptions
from data_prep.manifest import build_manifest, write_manifest
from data_prep.plan import plan_split
from data_prep.runner import LocalRunner, SlurmOptions, SlurmRunner
from data_prep.shard_writer import remove_stale_partials
from pipeline.files import write_json_atomic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", type=Path, help="folder with train/ and val/ or the ILSVRC tars")
    p.add_argument("--out", type=Path, help="output folder for shards and manifests")
    p.add_argument("--verify", type=Path, metavar="OUT", help="re-read and check written shards")
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    p.add_argument("--val-labels", type=Path, help=f"{imagenet.VAL_CSV} for a flat val set")
    p.add_argument("--shard-size", type=int, default=1000, help="max samples per shard")
    p.add_argument("--shard-bytes", type=int, help="max input bytes per shard (optional)")
    p.add_argument("--seed", type=int, default=0, help="seed of the global train shuffle")
    p.add_argument("--resize-shorter", type=int, help="re-encode with this shorter side")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality when encoding")
    p.add_argument("--max-rejects", type=int, default=0, help="rejected inputs tolerated")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes")
    p.add_argument("--submit", choices=["local", "slurm"], default="local")
    p.add_argument("--slurm-tasks", type=int, default=SlurmOptions.tasks)
    p.add_argument("--slurm-cpus-per-task", type=int, default=SlurmOptions.cpus_per_task)
    p.add_argument("--slurm-partition")
    p.add_argument("--slurm-time-min", type=int, default=SlurmOptions.time_min)
    p.add_argument("--slurm-mem-gb", type=int, default=SlurmOptions.mem_gb)
    args = p.parse_args(argv)
    if args.verify is None and (args.source is None or args.out is None):
        p.error("give --source and --out to write shards, or --verify OUT to check them")
    if args.shard_size < 1 or args.workers < 1:
        p.error("--shard-size and --workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (SLURM, kill) unwinds like Ctrl-C, so worker pools are ended with us.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.verify is not None:
            from data_prep.verify import verify_output

            return verify_output(args.verify, args.workers)
        return shard_dataset(args)
    except (imagenet.SourceError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130


def shard_dataset(args: argparse.Namespace) -> int:
    if not args.source.is_dir():
        raise imagenet.SourceError(f"--source {args.source} is not a folder")
    wnids = imagenet.train_wnids(args.source)
    labels = {w: i for i, w in enumerate(wnids)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "classes.json", imagenet.class_table(args.source, wnids))
    options = EncodeOptions(args.resize_shorter, args.quality)
    with _runner(args) as runner:
        manifests = [_shard_split(split, args, labels, options, runner) for split in args.splits]
    rejected = sum(m["num_rejected"] for m in manifests)
    if rejected > args.max_rejects:
        print(f"error: {rejected} inputs rejected (allowed: {args.max_rejects}); see "
              "'rejected' in the manifests, fix or remove them, or raise --max-rejects",
              file=sys.stderr)
        return 1
    return 0


def _runner(args: argparse.Namespace):
    if args.submit == "slurm":
        return SlurmRunner(SlurmOptions(args.slurm_tasks, args.slurm_cpus_per_task,
                                        args.slurm_partition, args.slurm_time_min,
                                        args.slurm_mem_gb))
    return LocalRunner(args.workers)


def _shard_split(split: str, args, labels: dict[str, int], options: EncodeOptions,
                 runner) -> dict:
    if split == "train":
        listing = imagenet.list_train(args.source)
    else:
        listing = imagenet.list_val(args.source, args.val_labels)
        imagenet.check_val_wnids(listing, list(labels))
    seed = args.seed if split == "train" else None
    specs = plan_split(split, listing.items, labels, seed, args.shard_size, args.shard_bytes)
    split_dir = args.out / split
    split_dir.mkdir(parents=True, exist_ok=True)
    for reject in listing.rejected:
        print(f"rejected {reject['source']}: {reject['reason']}")
    started = time.perf_counter()
    with _Progress(split, len(listing.items)) as progress:
        records = runner.run(specs, split_dir, options, progress.shard_done)
    remove_stale_partials(split_dir)
    manifest = build_manifest(split, records, listing.rejected, _arguments(args))
    write_manifest(split_dir, manifest)
    _print_summary(manifest, records, time.perf_counter() - started, split_dir)
    return manifest


class _Progress:
    """A progress bar in images (rate and ETA) that prints each reject as it is found."""

    def __init__(self, split: str, total: int):
        self.bar = tqdm(total=total, unit="img", desc=split, dynamic_ncols=True)
        self.rejected = 0

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.bar.close()

    def shard_done(self, spec, record: dict) -> None:
        for reject in record["rejected"]:
            self.bar.write(f"rejected {reject['source']}: {reject['reason']}")
        self.rejected += len(record["rejected"])
        self.bar.set_postfix(rejected=self.rejected, refresh=False)
        self.bar.update(len(spec.items))


def _print_summary(manifest: dict, records: list[dict], seconds: float, split_dir: Path):
    reused = sum(1 for r in records if r.get("reused"))
    rate = manifest["num_inputs"] / seconds if seconds > 0 else 0.0
    print(
        f"{manifest['split']}: {manifest['num_samples']} images in {len(records)} shards "
        f"({manifest['num_bytes'] / 1e9:.2f} GB, {reused} kept from an earlier run), "
        f"{manifest['num_rejected']} rejected, {manifest['num_converted']} converted, "
        f"{seconds:.1f} s ({rate:.0f} img/s) -> {split_dir / 'manifest.json'}"
    )


def _arguments(args: argparse.Namespace) -> dict:
    return json.loads(json.dumps(vars(args), default=str))


if __name__ == "__main__":
    sys.exit(main())
