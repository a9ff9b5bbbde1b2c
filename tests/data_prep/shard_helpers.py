"""Helpers for the data_prep tests: run shard.py as a user does, read shards back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import webdataset as wds

from data_prep.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]
SHARD_SCRIPT = REPO / "data_prep" / "shard.py"
TREE = dict(classes=4, train_per_class=12, val_per_class=3)


def run_shard(*args, **kwargs) -> subprocess.CompletedProcess:
    """Runs `python data_prep/shard.py ARGS` the way the README does."""
    command = [sys.executable, str(SHARD_SCRIPT), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, **kwargs)


def manifest(out: Path, split: str) -> dict:
    return read_manifest(out / split)


def tree_files(out: Path) -> dict[str, bytes]:
    """Every shard, index and manifest-free record under OUT, by relative path."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix in {".tar", ".idx"}
    }


def read_webdataset(out: Path, split: str) -> dict[str, dict]:
    """key -> {label, meta, jpg} for every sample of the split, read by webdataset."""
    samples = {}
    for shard in manifest(out, split)["shards"]:
        for s in wds.WebDataset(str(out / split / shard["name"]), shardshuffle=False):
            assert s["__key__"] not in samples, f"{s['__key__']} appears twice"
            samples[s["__key__"]] = {"label": int(s["cls"]), "meta": json.loads(s["json"]),
                                     "jpg": s["jpg"], "shard": shard["name"]}
    return samples


def read_dali(out: Path, split: str) -> list[dict]:
    """Every sample's .json read by DALI's webdataset reader through the written indexes."""
    from nvidia.dali import fn, pipeline_def

    shards = manifest(out, split)["shards"]
    paths = [str(out / split / s["name"]) for s in shards]
    indexes = [str(out / split / s["index"]) for s in shards]

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def reader():
        jpg, cls, meta = fn.readers.webdataset(
            paths=paths, index_paths=indexes, ext=["jpg", "cls", "json"],
            missing_component_behavior="error", name="r")
        return fn.decoders.image(jpg, device="cpu"), cls, meta

    pipe = reader()
    pipe.build()
    rows = []
    for _ in range(pipe.epoch_size("r")):
        image, cls, meta = (np.array(x[0]) for x in pipe.run())
        rows.append({"label": int(bytes(cls)), "meta": json.loads(bytes(meta)),
                     "shape": image.shape})
    return rows
