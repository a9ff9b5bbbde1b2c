"""The per-split manifest: every shard with its checksums, every input accounted for;
written here by the shard writer and read here by every reader of the shards.

    split = load_split(shards_root, "train")    # ShardError naming the shard, else Split
    shards_identity(shards_root)                # which data set, which cut: 12 hex digits

`num_inputs == num_samples + num_rejected` always holds: an input file is either in a
shard or listed under `rejected` with its reason. `warnings` holds what Pillow warned
about an input (corrupt EXIF, say), with the file it came from.

load_split makes cheap checks only, once per loader: every listed tar and index exists,
no unlisted tar sits beside them, each tar has the manifest's size (a truncated copy is
caught here, not as a hang or a short epoch inside a reader thread) and each index has
the manifest's sha256 (a stale index would make DALI read at wrong offsets). The tars
themselves are not hashed: that is `data_prep/shard.py --verify`, minutes per terabyte.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from data_prep.images import is_repair
from pipeline.files import file_sha256, write_json_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def build_manifest(split: str, records: list[dict], listing_rejected: list[dict],
                   arguments: dict) -> dict:
    records = sorted(records, key=lambda r: r["name"])
    rejected = listing_rejected + [r for rec in records for r in rec["rejected"]]
    converted = [c for rec in records for c in rec["converted"]
                 if any(is_repair(x) for x in c["conversions"])]
    class_counts: dict[str, int] = {}
    for rec in records:
        for wnid, n in rec["class_counts"].items():
            class_counts[wnid] = class_counts.get(wnid, 0) + n
    samples = sum(r["samples"] for r in records)
    return {
        "format_version": FORMAT_VERSION,
        "split": split,
        "num_inputs": samples + len(rejected),
        "num_samples": samples,
        "num_rejected": len(rejected),
        "num_converted": len(converted),
        "num_bytes": sum(r["bytes"] for r in records),
        "shards": [
            {k: r[k] for k in ("name", "index", "samples", "bytes", "sha256", "index_sha256")}
            for r in records
        ],
        "class_counts": dict(sorted(class_counts.items())),
        "rejected": sorted(rejected, key=lambda r: r["source"]),
        "converted": sorted(converted, key=lambda c: c["source"]),
        "warnings": sorted((w for rec in records for w in rec.get("warnings", [])),
                           key=lambda w: w["source"]),
        "arguments": arguments,
        "created_by": _versions(),
    }


def write_manifest(split_dir: Path, manifest: dict) -> Path:
    path = split_dir / MANIFEST
    write_json_atomic(path, manifest)
    return path


def shards_identity(root: Path, splits: tuple[str, ...] = ("train", "val")) -> str:
    """12 hex digits of a digest of classes.json and every shard's name and checksums: equal
    for two copies of one data set, different for another cut or another data set."""
    try:
        digest = hashlib.sha256((Path(root) / "classes.json").read_bytes())
    except FileNotFoundError:
        raise ShardError(f"{Path(root) / 'classes.json'} is missing: run data_prep/shard.py "
                         f"to write {root}") from None
    for split in splits:
        for entry in read_manifest(Path(root) / split)["shards"]:
            digest.update(f"{split}/{entry['name']} {entry['sha256']} "
                          f"{entry['index_sha256']}\n".encode())
    return digest.hexdigest()[:12]


def read_manifest(split_dir: Path) -> dict:
    path = split_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run data_prep/shard.py to write {split_dir}")
    return json.loads(path.read_text())


def _versions() -> dict:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"tool": "data_prep/shard.py", "version": version("bn-inception-pipeline"),
            "python": platform.python_version(), "pillow": version("pillow")}


class ShardError(ValueError):
    """A shard, its index or a sample does not match what data_prep wrote."""


@dataclass(frozen=True)
class Shard:
    name: str  # the tar's file name, e.g. train-000042.tar
    tar: Path
    index: Path
    samples: int


@dataclass(frozen=True)
class Split:
    name: str
    shards: tuple[Shard, ...]  # in manifest order
    num_samples: int
    num_classes: int


def load_split(root: str | Path, split: str, hash_indexes: bool = True) -> Split:
    """The split's shards after the manifest checks; raises ShardError naming the shard.

    hash_indexes=False skips the indexes' sha256 (their presence is still checked): for the
    ranks of a job whose first rank has hashed them (training.assembly), so that 64 ranks
    do not each read 1,282 index files from a shared file system at start.
    """
    root = Path(root)
    split_dir = root / split
    if not (split_dir / "manifest.json").is_file():
        raise ShardError(_not_shards(root, split_dir))
    manifest = read_manifest(split_dir)
    shards = tuple(_checked_shard(split_dir, entry, hash_indexes)
                   for entry in manifest["shards"])
    _check_listing(split_dir, split, shards)
    total = sum(s.samples for s in shards)
    if total != manifest["num_samples"]:
        raise ShardError(f"{split_dir}/manifest.json: shards hold {total} samples but "
                         f"num_samples is {manifest['num_samples']}")
    if total == 0:
        raise ShardError(f"{split_dir}: the manifest lists no samples")
    # A shard whose every input was rejected holds none, and DALI refuses its index.
    readable = tuple(s for s in shards if s.samples)
    return Split(split, readable, total, _num_classes(root))


def _not_shards(root: Path, split_dir: Path) -> str:
    if not root.is_dir():
        return f"data.shards = {root}: no such folder; point it at data_prep/shard.py's --out"
    looks_raw = split_dir.is_dir() and any(p.is_dir() for p in split_dir.iterdir())
    if looks_raw:  # class folders of JPEGs: the ImageNet tree itself
        return (f"data.shards = {root} looks like an ImageNet tree, not shards: run "
                f"python data_prep/shard.py --source {root} --out SHARDS, then data.shards=SHARDS")
    return (f"data.shards = {root}: {split_dir / 'manifest.json'} is missing; run "
            f"data_prep/shard.py to write {split_dir}")


def _checked_shard(split_dir: Path, entry: dict, hash_index: bool) -> Shard:
    tar, index = split_dir / entry["name"], split_dir / entry["index"]
    if not tar.is_file():
        raise ShardError(f"shard {tar} is listed in the manifest but missing")
    size = tar.stat().st_size
    if size != entry["bytes"]:
        raise ShardError(f"shard {tar} has {size} bytes, the manifest says {entry['bytes']}: "
                         "truncated or rewritten; re-copy it or rerun data_prep/shard.py")
    if not index.is_file():
        raise ShardError(f"index {index} of shard {entry['name']} is missing; rerun "
                         "data_prep/shard.py to rewrite it")
    if hash_index and file_sha256(index) != entry["index_sha256"]:
        raise ShardError(f"index {index} of shard {entry['name']} is stale: its sha256 differs "
                         "from the manifest's index_sha256; rerun data_prep/shard.py")
    return Shard(entry["name"], tar, index, int(entry["samples"]))


def _check_listing(split_dir: Path, split: str, shards: tuple[Shard, ...]) -> None:
    """A tar beside the listed ones means the manifest and the folder disagree."""
    present = {p.name for p in split_dir.glob(f"{split}-*.tar")}
    extra = sorted(present - {s.name for s in shards})
    if extra:
        raise ShardError(f"{split_dir} holds shards the manifest does not list: "
                         f"{', '.join(extra[:5])}; the shard list does not match the manifest")


def _num_classes(root: Path) -> int:
    path = root / "classes.json"
    if not path.is_file():
        raise ShardError(f"{path} is missing: run data_prep/shard.py to write {root}")
    return len(json.loads(path.read_text()))
