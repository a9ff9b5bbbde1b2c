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

from data_prep import imagenet
from data_prep.images import EncodeOptions
from data_prep.manifest import build_manifest, write_manifest
from data_prep.plan import plan_split
from data_prep.progress import Progress
from data_prep.runner import LocalRunner, SlurmOptions, SlurmRunner
from data_prep.shard_writer import remove_stale_partials, remove_unplanned_shards
from pipeline.files import describe_os_error, write_json_atomic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", type=Path, help="folder with train/ and val/ or the ILSVRC tars")
    p.add_argument("--out", type=Path, help="output folder for shards and manifests")
    p.add_argument("--verify", type=Path, metavar="OUT", help="re-read and check written shards")
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    p.add_argument("--val-labels", type=Path, help=f"{imagenet.VAL_CSV} for a flat val set")
    p.add_argument("--shard-size", type=_int_in(1), default=1000, help="max samples per shard")
    p.add_argument("--shard-bytes", type=_int_in(1), help="max input bytes per shard (optional)")
    p.add_argument("--seed", type=_int_in(0), default=0, help="seed of the global train shuffle")
    p.add_argument("--resize-shorter", type=_int_in(1), help="re-encode with this shorter side")
    p.add_argument("--quality", type=_int_in(1, 100), default=95,
                   help="JPEG quality when encoding (1-100; above 95 only grows the files)")
    p.add_argument("--max-rejects", type=_int_in(0), default=0, help="rejected inputs tolerated")
    p.add_argument("--workers", type=_int_in(1), default=os.cpu_count(), help="processes")
    p.add_argument("--submit", choices=["local", "slurm"], default="local")
    p.add_argument("--slurm-tasks", type=_int_in(1), default=SlurmOptions.tasks)
    p.add_argument("--slurm-cpus-per-task", type=_int_in(1), default=SlurmOptions.cpus_per_task)
    p.add_argument("--slurm-partition")
    p.add_argument("--slurm-time-min", type=_int_in(1), default=SlurmOptions.time_min)
    p.add_argument("--slurm-mem-gb", type=_int_in(1), default=SlurmOptions.mem_gb)
    args = p.parse_args(argv)
    if args.verify is None and (args.source is None or args.out is None):
        p.error("give --source and --out to write shards, or --verify OUT to check them")
    return args


def _int_in(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high]; argparse names the flag on error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a number {allowed}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (SLURM, kill) unwinds like Ctrl-C, so worker pools are ended with us.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if args.verify is not None:
            from data_prep.verify import verify_output

            return verify_output(args.verify, args.workers)
        return shard_dataset(args)
    except imagenet.SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full, read-only or forbidden disk: the path and what to do
        print(f"error: {describe_os_error(exc) if exc.filename else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130


def shard_dataset(args: argparse.Namespace) -> int:
    _check_folders(args.source, args.out)
    wnids = imagenet.train_wnids(args.source)
    labels = {w: i for i, w in enumerate(wnids)}
    # Every split is listed and planned before any is written: a missing val/ or a bad
    # name is reported at once, not after hours of train shards.
    plans = {split: _plan_split(split, args, labels) for split in args.splits}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "classes.json", imagenet.class_table(args.source, wnids))
    options = EncodeOptions(args.resize_shorter, args.quality)
    try:
        with _runner(args) as runner:
            manifests = [_shard_split(split, *plans[split], args, options, runner)
                         for split in args.splits]
    finally:
        if args.submit == "local":  # our workers have ended: their partial files are junk
            remove_stale_partials(args.out)
    rejected = sum(m["num_rejected"] for m in manifests)
    if rejected > args.max_rejects:
        print(f"error: {rejected} inputs rejected (allowed: {args.max_rejects}); see "
              "'rejected' in the manifests, fix or remove them, or raise --max-rejects",
              file=sys.stderr)
        return 1
    return 0


def _check_folders(source: Path, out: Path) -> None:
    if not source.is_dir():
        raise imagenet.SourceError(f"--source {source} is not a folder")
    # Symlinks resolved: shards written into the folders that are read would be listed
    # as inputs (or rejects) by the next run. A folder beside train/ and val/ is fine.
    real_source, real_out = source.resolve(), out.resolve()
    read = [real_source / "train", real_source / "val"]
    if real_out == real_source or any(d == real_out or d in real_out.parents for d in read):
        raise imagenet.SourceError(
            f"--out {out} ({real_out}) is --source or inside its train/ or val/: the shards "
            "would be mixed into the inputs; choose another --out")


def _plan_split(split: str, args, labels: dict[str, int]):
    if split == "train":
        listing = imagenet.list_train(args.source)
    else:
        listing = imagenet.list_val(args.source, args.val_labels)
        imagenet.check_val_wnids(listing, list(labels))
    seed = args.seed if split == "train" else None
    specs = plan_split(split, listing.items, labels, seed, args.shard_size, args.shard_bytes)
    return listing, specs


def _runner(args: argparse.Namespace):
    if args.submit == "slurm":
        return SlurmRunner(SlurmOptions(args.slurm_tasks, args.slurm_cpus_per_task,
                                        args.slurm_partition, args.slurm_time_min,
                                        args.slurm_mem_gb))
    return LocalRunner(args.workers)


def _shard_split(split: str, listing, specs, args, options: EncodeOptions, runner) -> dict:
    split_dir = args.out / split
    split_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(split_dir)  # left by a killed run
    started = time.perf_counter()
    with Progress(split, len(listing.items)) as progress:
        progress.report(listing.rejected)
        records = runner.run(specs, split_dir, options, progress.shard_done)
    remove_stale_partials(split_dir)
    # Only now that every planned shard is written: a refused rerun deletes nothing.
    removed = remove_unplanned_shards(split_dir, split, {s.name for s in specs})
    if removed:
        print(f"{split}: removed {len(removed)} shards of an earlier run that the inputs no "
              f"longer fill ({removed[0]} ... {removed[-1]})", flush=True)
    manifest = build_manifest(split, records, listing.rejected, _arguments(args))
    write_manifest(split_dir, manifest)
    _print_summary(manifest, records, time.perf_counter() - started, split_dir)
    return manifest


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
