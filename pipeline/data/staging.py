"""Node-local shards (data.stage_dir): one rank per node copies them, every rank reads the copy.

    data = stage_shards(cfg.data, env)     # collective; cfg.data itself without a stage_dir

At start the first rank of each node copies classes.json and each split's manifest, tars
and indexes to STAGE_DIR/<shards folder name>-<identity>/, hashing every tar on the way
and comparing it with the manifest's sha256; the node's other ranks wait at a barrier.
The identity is a digest of classes.json and every shard's name and checksums, so two
data sets whose folders share a name (they are all called `shards`) never share a copy,
and a copy is only ever rewritten with the same bytes. A copy verified by an earlier run
on that node is kept without reading it again when its size and modification time are
those recorded at verification (.staged.json), so a requeued job on the same nodes
starts at once. Ranks that share a machine (the local test cluster's fake nodes) take
turns through a file lock and the second finds the copy.

Each job holds a shared lock on its copy's `.in-use` file for as long as it runs. When
the disk lacks room for a new copy, copies that no live job holds are removed, least
recently used first; one in use is never removed (the start then stops, saying how much
room it needs). docs/training.md gives the arithmetic for when staging pays.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch.distributed as dist

from data_prep.manifest import ShardError, read_manifest, shards_identity
from pipeline.config import DataConfig
from pipeline.dist.group import DistEnv
from pipeline.files import PARTIAL_FILE, file_sha256, write_json_atomic

log = logging.getLogger(__name__)
SPLITS = ("train", "val")
STAMP = ".staged.json"  # {tar name: [sha256, bytes, mtime_ns]} of verified copies
CHUNK = 8 << 20


@dataclass
class Staged:
    copied: int = 0  # shards copied (and verified) now
    kept: int = 0  # shards whose verified copy was already there
    bytes: int = 0  # bytes copied now
    seconds: float = 0.0


IN_USE = ".in-use"  # STAGE_DIR/<copy>.in-use: shared-locked by every job reading the copy
_HELD: list = []  # this process's in-use locks: held until it exits


def stage_shards(cfg: DataConfig, env: DistEnv) -> DataConfig:
    """Collective: every rank gets the data config that reads the node-local copy."""
    if not cfg.stage_dir:
        return cfg
    source = Path(cfg.shards).resolve()
    target = Path(cfg.stage_dir) / f"{source.name}-{shards_identity(source)}"
    if env.local_rank == 0:
        _HELD.append(hold_copy(target))  # before the copy: no cleanup may take it meanwhile
        staged = copy_verified(source, target)
        log.info("staged %s to %s: %d shards copied (%.1f GB, %.0f MB/s), %d kept", source,
                 target, staged.copied, staged.bytes / 1e9,
                 staged.bytes / 1e6 / max(staged.seconds, 1e-9), staged.kept)
    if dist.is_initialized():
        dist.barrier()
    return replace(cfg, shards=str(target))


def hold_copy(target: Path):
    """A shared lock on target's in-use file, held while the returned file stays open."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = open(_in_use(target), "a")
    fcntl.flock(handle, fcntl.LOCK_SH)
    os.utime(handle.name)  # when it was last used: the cleanup removes the oldest first
    return handle


def copy_verified(source: Path, target: Path) -> Staged:
    """Brings `target` up to `source`'s manifests, making room first if the disk lacks it;
    returns what it did."""
    started, staged = time.perf_counter(), Staged()
    target.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        make_room(target, _missing_bytes(source, target))
        for split in SPLITS:
            _stage_split(source / split, target / split, staged)
        shutil.copyfile(source / "classes.json", target / "classes.json")
    staged.seconds = time.perf_counter() - started
    return staged


def _stage_split(source: Path, target: Path, staged: Staged) -> None:
    manifest = read_manifest(source)
    target.mkdir(parents=True, exist_ok=True)
    stamps = _read_stamps(target)
    listed = {entry["name"] for entry in manifest["shards"]}
    for stale in target.glob("*.tar"):  # another version of the data set staged here
        if stale.name not in listed:
            stale.unlink()
            stamps.pop(stale.name, None)
    for entry in manifest["shards"]:
        tar = target / entry["name"]
        if _intact(tar, entry, stamps.get(entry["name"])) and \
                file_sha256(target / entry["index"]) == entry["index_sha256"]:
            staged.kept += 1
            continue
        _copy_checked(source / entry["index"], target / entry["index"], entry["index_sha256"])
        _copy_checked(source / entry["name"], tar, entry["sha256"])
        stat = tar.stat()
        stamps[entry["name"]] = [entry["sha256"], stat.st_size, stat.st_mtime_ns]
        write_json_atomic(target / STAMP, stamps)  # an interrupted copy keeps what it did
        staged.copied += 1
        staged.bytes += stat.st_size
    shutil.copyfile(source / "manifest.json", target / "manifest.json")


def _missing_bytes(source: Path, target: Path) -> int:
    """Bytes of the tars that the copy lacks (or holds damaged, by their stamps)."""
    missing = 0
    for split in SPLITS:
        stamps = _read_stamps(target / split)
        for entry in read_manifest(source / split)["shards"]:
            if not _intact(target / split / entry["name"], entry, stamps.get(entry["name"])):
                missing += entry["bytes"]
    return missing


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def make_room(target: Path, needed: int) -> None:
    """Removes the staged copies beside `target` that no live job holds, least recently
    used first, until `needed` bytes are free; ShardError when that is not enough."""
    root = target.parent
    if free_bytes(root) >= needed:
        return
    others = sorted((c for c in root.iterdir() if c != target and _is_copy(c)), key=_last_used)
    for copy in others:
        if _remove_unused(copy, _in_use(copy)):
            log.warning("removed the staged copy %s (no job uses it) to make room", copy)
            if free_bytes(root) >= needed:
                return
    raise ShardError(f"data.stage_dir {root}: {needed / 1e9:.2f} GB needed to stage "
                     f"{target.name}, {free_bytes(root) / 1e9:.2f} GB free after removing "
                     "the copies no job uses; free space there or choose another stage_dir")


def _is_copy(folder: Path) -> bool:
    """A copy staging made (its stamps), not anything else kept in the stage folder."""
    return folder.is_dir() and any((folder / split / STAMP).is_file() for split in SPLITS)


def _last_used(copy: Path) -> float:
    lock = _in_use(copy)
    return (lock if lock.is_file() else copy).stat().st_mtime


def _remove_unused(copy: Path, lock: Path) -> bool:
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live job reads it
        shutil.rmtree(copy)
        return True  # the lock file stays: a job waiting on it finds no copy and makes one


def _in_use(target: Path) -> Path:
    return target.with_name(target.name + IN_USE)


def _intact(tar: Path, entry: dict, stamp: list | None) -> bool:
    if stamp is None or not tar.is_file():
        return False
    stat = tar.stat()
    return stamp == [entry["sha256"], entry["bytes"], stat.st_mtime_ns] and \
        stat.st_size == entry["bytes"]


def _copy_checked(source: Path, target: Path, sha256: str) -> None:
    """Copies with the hash taken on the way; a source that differs from its manifest is an
    error naming it, and nothing half-copied is left."""
    digest, tmp = hashlib.sha256(), target.with_name(f"{target.name}{PARTIAL_FILE}{os.getpid()}")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        if digest.hexdigest() != sha256:
            raise ShardError(f"{source} does not match the sha256 in its manifest: the shared "
                             "copy is damaged; check it with data_prep/shard.py --verify")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _read_stamps(target: Path) -> dict[str, list]:
    try:
        return json.loads((target / STAMP).read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
