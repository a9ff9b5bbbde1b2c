"""Writes one WebDataset shard: a tar, its DALI index and its record, atomically.

A shard is written as `NAME.tar.partial-PID` and renamed when complete; the record
(`records/NAME.json`: counts, checksums, rejects) is written last and is the mark of a
finished shard, so a rerun after any kill keeps exactly the shards that were completed.
Tar headers carry no time, owner or mode of the source, so the same inputs give
byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from data_prep.dali_index import TAR_BLOCK, index_text, sample_line
from data_prep.imagenet import SourceItem
from data_prep.images import EncodeOptions, PreparedImage, RejectedImage, prepare_image
from pipeline.files import PARTIAL_FILE, AtomicFile, write_json_atomic


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: its name and the inputs that go into it, in order."""

    split: str
    index: int
    items: tuple[SourceItem, ...]
    labels: dict[str, int]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"

    def digest(self, options: EncodeOptions) -> str:
        """Identifies what this shard must contain, so a rerun with other inputs is caught."""
        text = json.dumps([options.__dict__, [(i.relpath, i.size) for i in self.items]])
        return hashlib.sha256(text.encode()).hexdigest()


class _TarStream:
    """Appends files to an uncompressed tar and hashes it on the way out.

    Headers come from tarfile (USTAR); the data is written in one piece per file rather
    than through tarfile's 16 KiB copy loop, which doubled the cost of copy mode.
    """

    def __init__(self, f):
        self.f, self.sha, self.offset = f, hashlib.sha256(), 0

    def add(self, name: str, data: bytes) -> int:
        """Writes one member; returns the offset of its data (what the DALI index holds)."""
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o444, 0
        header = info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")
        self._write(header)
        data_offset = self.offset
        self._write(data)
        self._write(bytes(_padded(len(data)) - len(data)))
        return data_offset

    def close(self) -> None:
        """The end-of-archive blocks, padded to whole records as tarfile pads them."""
        end = self.offset + 2 * TAR_BLOCK
        self._write(bytes(2 * TAR_BLOCK + (-end) % tarfile.RECORDSIZE))

    def _write(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.f.write(chunk)
        self.offset += len(chunk)


def write_shard(spec: ShardSpec, out_dir: Path, options: EncodeOptions) -> dict:
    """Writes the shard's tar, index and record; returns the record."""
    tar_path, idx_path = out_dir / f"{spec.name}.tar", out_dir / f"{spec.name}.idx"
    index_lines, rejected, converted, notes = [], [], [], []
    with AtomicFile(tar_path) as raw_file:
        tar = _TarStream(raw_file)
        for item in spec.items:
            image, reason, caught = _prepare(item, options)
            notes += [{"source": item.relpath, "warning": text} for text in caught]
            if image is None:
                rejected.append({"source": item.relpath, "reason": reason})
                continue
            members = _sample_members(item, image, spec.labels[item.wnid])
            index_lines.append(_add_sample(tar, item.key, members))
            if image.conversions:
                converted.append({"source": item.relpath, "key": item.key,
                                  "conversions": image.conversions})
        tar.close()
    index = index_text(index_lines)
    with AtomicFile(idx_path) as f:
        f.write(index.encode())
    record = {
        "name": tar_path.name, "index": idx_path.name, "samples": len(index_lines),
        "bytes": tar_path.stat().st_size, "sha256": tar.sha.hexdigest(),
        "index_sha256": hashlib.sha256(index.encode()).hexdigest(),
        "class_counts": _class_counts(spec, rejected), "rejected": rejected,
        "converted": converted, "warnings": notes, "plan_digest": spec.digest(options),
    }
    write_json_atomic(record_path(out_dir, spec.name), record)
    return record


def record_path(out_dir: Path, name: str) -> Path:
    return out_dir / "records" / f"{name}.json"


def _prepare(item: SourceItem, options: EncodeOptions):
    """(image or None, reject reason or None, warnings): Pillow's warnings are kept for the
    manifest, as printed ones would break the progress bar and name no file."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image, reason = prepare_image(item.read(), options), None
        except RejectedImage as exc:
            image, reason = None, str(exc)
    return image, reason, [str(w.message) for w in caught]


def _sample_members(item: SourceItem, image: PreparedImage, label: int) -> dict[str, bytes]:
    meta = {"wnid": item.wnid, "source": item.relpath, "width": image.width,
            "height": image.height, "conversions": image.conversions}
    return {
        "cls": str(label).encode(),
        "jpg": image.data,
        "json": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(),
    }


def _add_sample(tar: _TarStream, key: str, members: dict[str, bytes]) -> str:
    """Adds the sample's files and returns its index line (ext offset size name ...)."""
    return sample_line([(ext, tar.add(f"{key}.{ext}", data), len(data), f"{key}.{ext}")
                        for ext, data in members.items()])


def _padded(size: int) -> int:
    return -(-size // TAR_BLOCK) * TAR_BLOCK


def _class_counts(spec: ShardSpec, rejected: list[dict]) -> dict[str, int]:
    lost = {r["source"] for r in rejected}
    counts: dict[str, int] = {}
    for item in spec.items:
        if item.relpath not in lost:
            counts[item.wnid] = counts.get(item.wnid, 0) + 1
    return dict(sorted(counts.items()))


def remove_unplanned_shards(split_dir: Path, split: str, planned: set[str]) -> list[str]:
    """Deletes the shards (tar, index, record) of an earlier run that the plan no longer has,
    e.g. after a rerun with fewer inputs: left there, the trainer refuses the folder."""
    pattern = re.compile(rf"{re.escape(split)}-\d{{6}}")
    files = [*split_dir.glob(f"{split}-*.tar"), *split_dir.glob(f"{split}-*.idx"),
             *(split_dir / "records").glob(f"{split}-*.json")]
    stale = [p for p in files if pattern.fullmatch(p.stem) and p.stem not in planned]
    for path in stale:
        path.unlink()
    return sorted({p.stem for p in stale})


def remove_stale_partials(out_dir: Path) -> None:
    """Deletes partial files left by killed writers (their process no longer runs)."""
    for path in out_dir.rglob(f"*{PARTIAL_FILE}*"):
        pid = int(path.name.rsplit("-", 1)[1])
        if not _process_alive(pid):
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed orphan can linger as a zombie where nothing reaps it (containers)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
