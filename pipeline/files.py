"""File helpers that the shard writer, the loaders and the checkpoints share.

    digest = file_sha256(path)              # None when the file does not exist
    write_json_atomic(path, {"a": 1})       # readers see the old file or the new one
    fsync_path(folder)                      # a rename inside `folder` survives a crash
    describe_os_error(err)                  # "/runs/x/ckpt: disk full (...)"
    claim_folder(out, ".pipeline-demo", "python -m pipeline.demo")   # or why not
    seal(tmp, final, "meta.json", info)     # a folder made visible complete, or not at all
    problem = check_sealed(final, "meta.json")   # None, or which file is missing or damaged

A sealed folder (a checkpoint, a weights folder) is written as FOLDER.partial/; seal
syncs every file, hashes each into an index JSON (`info` plus "files": {name: [size,
sha256]}) written last, and renames the folder into place; check_sealed compares sizes,
then hashes. A crash at any moment leaves a complete folder or a .partial one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

PARTIAL_FILE = ".partial-"  # PATH.partial-PID: a file being written by process PID
PARTIAL_DIR = ".partial"  # FOLDER.partial: a folder being written, sealed by one rename
# What a person does about the errors of full, read-only and forbidden places.
OS_ERRORS = {
    errno.ENOSPC: "disk full: free space there or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free space there or write elsewhere",
    errno.EROFS: "read-only file system: write elsewhere",
    errno.EACCES: "permission denied: check the owner and mode, or write elsewhere",
    errno.EPERM: "operation not permitted: check the owner and mode, or write elsewhere",
    errno.ENOENT: "not found: check the path",
}


def file_sha256(path: Path) -> str | None:
    """The file's sha256, or None if it does not exist."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, obj) -> None:
    """Sorted, indented JSON, written beside `path` and renamed onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path) as f:
        f.write((json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def describe_os_error(err: OSError) -> str:
    """One line for a person: the path, what happened and what to do."""
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    what = OS_ERRORS.get(err.errno, err.strerror or str(err))
    return f"{where or 'a file operation'}: {what} ({type(err).__name__}, errno {err.errno})"


def fsync_path(path: Path) -> None:
    """Flushes a file, or a folder's entries (after a rename), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """Opens PATH.partial-PID for writing; on success renames it to PATH.

    No fsync: after a power loss a torn shard fails its checksum on the rerun and is
    rewritten, and syncing would make every shard wait for the disk.

    The PID in the name keeps two writers of one file apart (a worker orphaned by a
    killed run can still be finishing while the rerun starts); both write the same bytes.
    """

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(f"{path.name}{PARTIAL_FILE}{os.getpid()}")

    def __enter__(self):
        self.f = open(self.tmp, "wb")
        return self.f

    def __exit__(self, exc_type, exc, _tb):
        try:
            self.f.close()  # flushes the last buffer: a full disk can fail here too
            if exc_type is None:
                os.replace(self.tmp, self.path)
        except OSError as err:
            exc = err
            raise
        finally:
            self.tmp.unlink(missing_ok=True)  # a failed write leaves no partial (nor a rename)
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = str(self.path)  # write() errors name no file: say which
        return False


def seal(tmp: Path, final: Path, index_name: str, info: dict) -> None:
    """Syncs every file of `tmp`, hashes it into tmp/index_name, then renames `tmp` to
    `final` (an earlier `final` is replaced: the same step saved again after a resume)."""
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        fsync_path(path)
        files[str(path.relative_to(tmp))] = (path.stat().st_size, file_sha256(path))
    with open(tmp / index_name, "w") as f:
        json.dump({**info, "files": files}, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(final.parent)


def read_index(folder: Path, index_name: str) -> dict | None:
    """A sealed folder's index, or None when it is missing or unreadable."""
    try:
        return json.loads((folder / index_name).read_text())
    except (OSError, ValueError):
        return None


def check_sealed(folder: Path, index_name: str) -> str | None:
    """None when every file the index lists is there with its size and sha256."""
    index = read_index(folder, index_name)
    if index is None or not isinstance(index.get("files"), dict):
        return f"{index_name} is missing or unreadable"
    for name, (size, digest) in index["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {index_name} says {size}"
        if file_sha256(path) != digest:
            return f"{name} does not match its sha256"
    return None


def claim_folder(folder: Path, mark: str, owner: str) -> str | None:
    """Makes `folder` the working folder of a command that replaces what it wrote there on
    a rerun: only a new or empty folder, or one that the command marked earlier (the file
    `mark` in it), is claimed. Returns why not, or None once it is marked."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file; give a folder"
    if folder.is_dir() and any(folder.iterdir()) and not (folder / mark).is_file():
        return (f"{folder} holds files that {owner} did not make; give a new or empty folder "
                f"({owner} replaces what it wrote there on a rerun)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / mark).write_text(f"made by {owner}; what it wrote here is replaced on a rerun\n")
    return None
