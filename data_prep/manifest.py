"""The per-split manifest: every shard with its checksums, every input accounted for.

`num_inputs == num_samples + num_rejected` always holds: an input file is either in a
shard or listed under `rejected` with its reason. `warnings` holds what Pillow warned
about an input (corrupt EXIF, say), with the file it came from.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from data_prep.images import is_repair
from pipeline.files import write_json_atomic

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
