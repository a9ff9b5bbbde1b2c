"""Writes a small ILSVRC2012-shaped tree of learnable JPEGs; nothing is downloaded.

    python -m data_prep.sample OUT [--classes 10] [--train-per-class 40] [--bad]

Each class has its own colour and stripe orientation under noise, so a network can
learn it in a few CPU minutes. `--bad` adds the defects of the real train set (CMYK,
a PNG named .JPEG, grayscale) and broken files (truncated, empty, not an image).
`--val-layout flat` writes val/ILSVRC2012_val_*.JPEG with LOC_val_solution.csv;
`--archives` writes ILSVRC2012_img_{train,val}.tar instead of folders.
"""

from __future__ import annotations

import argparse
import csv
import io
import tarfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

# The defects written by --bad: file name suffix -> how the bytes are made.
BAD_CASES = ("cmyk", "png", "gray", "truncated", "empty", "text")
BROKEN = ("truncated", "empty", "text")  # the ones that must be rejected


def real_wnids(count: int) -> list[str]:
    """Real ILSVRC2012 wnids spread over the class list, so names resolve."""
    text = resources.files("data_prep").joinpath("ilsvrc2012_synsets.txt").read_text()
    wnids = [line.split(" ", 1)[0] for line in text.splitlines() if line.strip()]
    step = max(1, len(wnids) // count)
    return wnids[::step][:count]


def class_image(label: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A noisy image whose colour and stripe angle depend on the class."""
    width, height = size
    hue = np.array([np.sin(label * 2.1), np.sin(label * 1.3 + 2), np.sin(label * 0.7 + 4)])
    angle = np.pi * label / 7.0
    y, x = np.mgrid[0:height, 0:width] / 16.0
    stripes = np.sin(x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, 2 * np.pi))
    base = 128 + 60 * hue[None, None, :] + 50 * stripes[..., None]
    noisy = base + rng.normal(0, 25, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def bad_bytes(case: str, image: Image.Image) -> bytes:
    if case == "cmyk":
        return encode(image.convert("CMYK"))
    if case == "png":
        return encode(image, "PNG")
    if case == "gray":
        return encode(image.convert("L"))
    if case == "truncated":
        data = encode(image)
        return data[: len(data) // 2]
    if case == "empty":
        return b""
    return b"this is a note, not an image\n"


def generate(out: Path, classes: int, train_per_class: int, val_per_class: int,
             bad: bool = False, val_layout: str = "folder", archives: bool = False,
             seed: int = 0, size: tuple[int, int] | None = None,
             image: Callable[[int, int, int], bytes] | None = None,
             distinct: int | None = None) -> dict:
    """Writes the tree; returns {"train": {relpath: wnid}, "val": {...}} of what it wrote.

    `size` fixes (width, height), else each image draws its own in [72, 260). `image`
    (width, height, label) -> file bytes replaces the class pictures (tests that read
    pixels back). `distinct` encodes only that many images per class and repeats them,
    for benchmarks of byte copying, which never look inside.
    """
    rng = np.random.default_rng(seed)
    make = _ImageMaker(rng, size, image, distinct)
    wnids = real_wnids(classes)
    train, val = {}, {}
    for label, wnid in enumerate(wnids):
        for i in range(train_per_class):
            train[f"train/{wnid}/{wnid}_{i}.JPEG"] = (wnid, make(label))
        for i in range(val_per_class):
            n = label * val_per_class + i + 1
            name = f"ILSVRC2012_val_{n:08d}.JPEG"
            rel = f"val/{wnid}/{name}" if val_layout == "folder" else f"val/{name}"
            val[rel] = (wnid, make(label))
    if bad:
        for case in BAD_CASES:
            wnid = wnids[0]
            picture = class_image(0, rng, (96, 80))
            train[f"train/{wnid}/{wnid}_{case}.JPEG"] = (wnid, bad_bytes(case, picture))
    _write_tree(out, train, val, val_layout, archives)
    return {"train": {k: v[0] for k, v in train.items()}, "val": {k: v[0] for k, v in val.items()}}


class _ImageMaker:
    """The bytes of the next image of a class."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int] | None,
                 image: Callable[[int, int, int], bytes] | None, distinct: int | None):
        self.rng, self.size, self.image, self.distinct = rng, size, image, distinct
        self.made: dict[int, list[bytes]] = {}

    def __call__(self, label: int) -> bytes:
        made = self.made.setdefault(label, [])
        if self.distinct and len(made) >= self.distinct:
            made.append(made[len(made) % self.distinct])
            return made[-1]
        width, height = self.size or (int(self.rng.integers(72, 260)),
                                      int(self.rng.integers(72, 260)))
        data = (self.image(width, height, label) if self.image else
                encode(class_image(label, self.rng, (width, height))))
        if self.distinct:
            made.append(data)
        return data


def _write_tree(out: Path, train: dict, val: dict, val_layout: str, archives: bool) -> None:
    if archives:
        _write_train_archive(out, train)
        _write_val_archive(out, val)
    else:
        for rel, (_, data) in {**train, **val}.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
    if val_layout == "flat" or archives:
        with open(out / "LOC_val_solution.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "PredictionString"])
            for rel, (wnid, _) in sorted(val.items()):
                writer.writerow([Path(rel).stem, f"{wnid} 10 10 50 50"])


def _write_train_archive(out: Path, train: dict) -> None:
    by_class: dict[str, dict[str, bytes]] = {}
    for rel, (wnid, data) in train.items():
        by_class.setdefault(wnid, {})[Path(rel).name] = data
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid, files in sorted(by_class.items()):
            _add_bytes(outer, f"{wnid}.tar", _tar_bytes(files))


def _write_val_archive(out: Path, val: dict) -> None:
    files = {Path(rel).name: data for rel, (_, data) in val.items()}
    (out / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes(files))


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(files.items()):
            _add_bytes(tar, name, data)
    return buffer.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--val-per-class", type=int, default=10)
    p.add_argument("--bad", action="store_true", help="add the real train set's defects")
    p.add_argument("--val-layout", choices=["folder", "flat"], default="folder")
    p.add_argument("--archives", action="store_true", help="write the ILSVRC2012 tars")
    p.add_argument("--size", help="fixed WIDTHxHEIGHT instead of varied sizes")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    size = tuple(int(v) for v in a.size.split("x")) if a.size else None
    written = generate(a.out, a.classes, a.train_per_class, a.val_per_class, a.bad,
                       a.val_layout, a.archives, a.seed, size)
    print(f"wrote {len(written['train'])} train and {len(written['val'])} val files to {a.out}")


if __name__ == "__main__":
    main()
