"""Reads back what W&B recorded offline: the records of run-<id>.wandb files.

    for record in read_records(path): record.WhichOneof("record_type")   # "history", ...
    run = offline_run(run_dir)   # history rows, config, media files of every segment

The file is W&B's transaction log: a 7-byte header (":W&B", 0xBEE1, version 0), then
32 KiB blocks of records, each `crc32 (4) | length (2, little-endian) | type (1) | data`,
where a record too long for its block is split FIRST / MIDDLE / LAST, and a block's tail
shorter than a header is zero padding. The data are wandb_internal_pb2.Record messages:
W&B's own protobuf, which is internal, hence the pin of wandb to one minor version in the
dev extra. When a W&B release changes any of this, the tests that read it skip, saying
so (a skip, not a failure: the pipeline's own behaviour is not what changed).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import wandb

try:
    from wandb.proto import wandb_internal_pb2
except ImportError as err:  # the module moved: W&B's internal layout changed
    pytest.skip(f"wandb {wandb.__version__}: its offline record format moved ({err}); update "
                "tests/monitor/wandb_records.py for this release", allow_module_level=True)

MAGIC = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def format_changed(path: Path, what: str) -> None:
    pytest.skip(f"wandb {wandb.__version__} wrote {path} in a format this reader does not "
                f"know ({what}); update tests/monitor/wandb_records.py for this release")


def read_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    if data[:HEADER] != MAGIC:
        format_changed(path, f"header {data[:HEADER]!r}")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += room
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except Exception as err:  # protobuf's DecodeError: another record layout
                format_changed(path, f"a record does not parse: {err}")
            yield record


@dataclass
class OfflineRun:
    ids: set[str] = field(default_factory=set)
    history: list[dict] = field(default_factory=list)  # every wandb.log row, in order
    config: dict = field(default_factory=dict)  # the last value of each top-level key
    media: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # W&B's console output lines


def offline_run(run_dir: Path, wait_s: float = 0) -> OfflineRun:
    """Every offline segment W&B wrote under run_dir/wandb, oldest first. `wait_s`: how long
    to wait for a run record, which W&B's service process may write after finish()
    returned on a busy machine."""
    deadline = time.monotonic() + wait_s
    while True:
        run = _read_segments(run_dir)
        if run.ids or time.monotonic() >= deadline:
            return run
        time.sleep(0.5)


def _read_segments(run_dir: Path) -> OfflineRun:
    run = OfflineRun()
    segments = sorted((run_dir / "wandb").glob("offline-run-*"))
    for segment in segments:
        for path in segment.glob("run-*.wandb"):
            for record in read_records(path):
                _add(run, record)
        run.media += sorted((segment / "files" / "media").rglob("*.png"))
        log = segment / "files" / "output.log"
        if log.is_file():
            run.warnings += [line for line in log.read_text().splitlines()
                             if "wandb: WARNING" in line]
    return run


def _add(run: OfflineRun, record: wandb_internal_pb2.Record) -> None:
    kind = record.WhichOneof("record_type")
    if kind == "run":
        run.ids.add(record.run.run_id)
        _update(run.config, record.run.config.update)
    elif kind == "config":
        _update(run.config, record.config.update)
    elif kind == "history":
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        run.history.append(row)


def _update(config: dict, items) -> None:
    for item in items:
        key = item.key or "/".join(item.nested_key)
        config[key] = json.loads(item.value_json)
