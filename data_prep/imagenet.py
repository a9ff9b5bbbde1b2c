"""Finds the images of an ILSVRC2012 source and the label of each.

Layouts understood (SOURCE is the folder given on the command line):
- train: `SOURCE/train/<wnid>/*` or the archive `SOURCE/ILSVRC2012_img_train.tar`
  (a tar of per-class tars, read in place: no unpacking to disk).
- val: `SOURCE/val/<wnid>/*`, flat `SOURCE/val/ILSVRC2012_val_*.JPEG`, or the archive
  `SOURCE/ILSVRC2012_img_val.tar`; flat layouts take labels from `LOC_val_solution.csv`.
Labels are the index of the wnid in the sorted list of train wnids.
"""

from __future__ import annotations

import csv
import os
import re
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from data_prep.dali_index import UNSAFE_IN_KEY

WNID = re.compile(r"^n\d{8}$")
TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
VAL_CSV = "LOC_val_solution.csv"
SYNSET_FILE = "LOC_synset_mapping.txt"
NESTED = "nested folder: files in class subfolders are not read; move them up into the class folder"


class SourceError(Exception):
    """The source tree cannot be sharded as given; the message says what to fix."""


@dataclass(frozen=True)
class SourceItem:
    """One input file: where its bytes are and what it is."""

    key: str  # sample key in the shards: the file stem, no dots or white space
    relpath: str  # path relative to SOURCE (archive members: archive/inner/name)
    wnid: str
    path: str  # file to read: the image itself or the archive holding it
    offset: int = 0  # where the bytes start in `path`
    size: int = -1  # number of bytes; -1 reads the whole file

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read(self.size)


@dataclass
class Listing:
    items: list[SourceItem]
    rejected: list[dict]  # {"source": relpath, "reason": ...} found while listing


def train_wnids(source: Path) -> list[str]:
    """The sorted train wnids: position in this list is the label."""
    if (source / "train").is_dir():
        names = [p.name for p in (source / "train").iterdir() if p.is_dir()]
    elif (source / TRAIN_ARCHIVE).is_file():
        with tarfile.open(source / TRAIN_ARCHIVE) as outer:
            names = [Path(m.name).stem for m in outer if m.isfile()]
    else:
        raise SourceError(
            f"{source}: no train/ folder and no {TRAIN_ARCHIVE}; point --source at the "
            "folder that holds them (ILSVRC/Data/CLS-LOC in the Kaggle download)"
        )
    for name in names:
        if not WNID.match(name):
            raise SourceError(f"{source}: train class '{name}' is not a wnid like n01440764")
    if not names:
        raise SourceError(f"{source}: the train set has no class folders")
    return sorted(names)


def class_table(source: Path, wnids: list[str]) -> list[dict]:
    """classes.json rows: index, wnid and the human-readable ILSVRC2012 name."""
    names = _synset_names(source)
    return [{"index": i, "wnid": w, "name": names.get(w, w)} for i, w in enumerate(wnids)]


def _synset_names(source: Path) -> dict[str, str]:
    local = source / SYNSET_FILE
    text = local.read_text() if local.is_file() else (
        resources.files("data_prep").joinpath("ilsvrc2012_synsets.txt").read_text()
    )
    pairs = (line.split(" ", 1) for line in text.splitlines() if line.strip())
    return {wnid: name.strip() for wnid, name in pairs}


def list_train(source: Path) -> Listing:
    if (source / "train").is_dir():
        return _list_class_folders(source, "train")
    return _list_train_archive(source)


def list_val(source: Path, val_csv: Path | None) -> Listing:
    folder = source / "val"
    if not folder.is_dir() and not (source / VAL_ARCHIVE).is_file():
        raise SourceError(f"{source}: no val/ folder and no {VAL_ARCHIVE}; add one, or "
                          "shard the train set alone with --splits train")
    if folder.is_dir() and any(p.is_dir() for p in folder.iterdir()):
        return _list_class_folders(source, "val")
    labels = _val_labels(source, val_csv)
    odd: list[dict] = []
    if folder.is_dir():
        files, odd = _folder_files(source, folder)
        items = [_file_item(source, p, labels.get(_stem(p.name), "")) for p in files]
    else:
        items = [
            SourceItem(_key(name), f"{VAL_ARCHIVE}/{name}", labels.get(_stem(name), ""),
                       str(source / VAL_ARCHIVE), offset, size)
            for name, offset, size in _tar_members(source / VAL_ARCHIVE)
        ]
    listing = _drop_unlabelled(items, val_csv or source / VAL_CSV)
    return Listing(listing.items, odd + listing.rejected)


def check_val_wnids(listing: Listing, wnids: list[str]) -> None:
    known = set(wnids)
    for item in listing.items:
        if item.wnid not in known:
            raise SourceError(
                f"val image {item.relpath} has wnid {item.wnid}, which is not a train class; "
                "check that train and val come from the same release"
            )


def _list_class_folders(source: Path, split: str) -> Listing:
    items, rejected = [], []
    for entry in sorted((source / split).iterdir()):
        if not entry.is_dir():
            reason = "not in a class folder" if entry.is_file() else _not_a_file(entry)
            rejected.append(_reject(source, entry, reason))
            continue
        if not WNID.match(entry.name):
            raise SourceError(f"{entry}: class folder name is not a wnid like n01440764")
        files, odd = _folder_files(source, entry)
        if not files:
            raise SourceError(f"{entry}: class folder is empty (no images directly in it); "
                              "remove it or restore its images")
        items.extend(_file_item(source, p, entry.name) for p in files)
        rejected.extend(odd)
    return Listing(items, rejected)


def _folder_files(source: Path, folder: Path) -> tuple[list[Path], list[dict]]:
    """The files directly in `folder`, and a reject for everything else below it, so that
    the manifest accounts for every file that was not read."""
    files, rejected = [], []
    for path in sorted(folder.iterdir()):
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            rejected.extend(_reject(source, p, NESTED) for p in sorted(path.rglob("*"))
                            if p.is_symlink() or not p.is_dir())
        else:
            rejected.append(_reject(source, path, _not_a_file(path)))
    return files, rejected


def _not_a_file(path: Path) -> str:
    if path.is_symlink():
        return f"dangling symlink: its target {os.readlink(path)} does not exist"
    return "not a regular file (a socket, pipe or device)"


def _reject(source: Path, path: Path, reason: str) -> dict:
    return {"source": str(path.relative_to(source)), "reason": reason}


def _list_train_archive(source: Path) -> Listing:
    items = []
    with tarfile.open(source / TRAIN_ARCHIVE) as outer:
        for member in outer:
            if not member.isfile():
                continue
            wnid = Path(member.name).stem
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                members = [m for m in inner if m.isfile()]
            if not members:
                raise SourceError(f"{TRAIN_ARCHIVE}/{member.name}: class archive is empty")
            for m in members:
                items.append(SourceItem(
                    _key(m.name), f"{TRAIN_ARCHIVE}/{member.name}/{m.name}", wnid,
                    str(source / TRAIN_ARCHIVE), member.offset_data + m.offset_data, m.size,
                ))
    return Listing(items, [])


def _tar_members(path: Path):
    with tarfile.open(path) as archive:
        for m in archive:
            if m.isfile():
                yield m.name, m.offset_data, m.size


def _val_labels(source: Path, val_csv: Path | None) -> dict[str, str]:
    # Resolved, so that `--source .` looks above the working folder too.
    folders = [source.resolve(), *source.resolve().parents][:4]
    candidates = [val_csv] if val_csv else [d / VAL_CSV for d in folders]
    for path in candidates:
        if path.is_file():
            with open(path, newline="") as f:
                return {row["ImageId"]: row["PredictionString"].split()[0]
                        for row in csv.DictReader(f)}
    raise SourceError(
        f"{source}: val images are not in class folders and no {VAL_CSV} was found "
        f"(looked at {', '.join(map(str, candidates))}); pass --val-labels PATH"
    )


def _drop_unlabelled(items: list[SourceItem], csv_path: Path) -> Listing:
    kept = [i for i in items if i.wnid]
    rejected = [{"source": i.relpath, "reason": f"no label in {csv_path.name}"}
                for i in items if not i.wnid]
    return Listing(kept, rejected)


def _file_item(source: Path, path: Path, wnid: str) -> SourceItem:
    return SourceItem(_key(path.name), str(path.relative_to(source)), wnid, str(path))


def _stem(name: str) -> str:
    return Path(name).name.split(".", 1)[0]


def _key(name: str) -> str:
    # DALI and webdataset split a member name at its first dot, and DALI's index line at
    # white space: keys have neither ("a b.c.JPEG" -> "a_b_c").
    return UNSAFE_IN_KEY.sub("_", Path(name).stem)
