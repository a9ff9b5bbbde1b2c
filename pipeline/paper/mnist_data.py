"""The MNIST experiment's data: the MNIST IDX files, or scikit-learn's 8x8 digits.

    data = load_idx_dir(Path("mnist/"))   # train-*/t10k-* IDX files, each may be .gz
    data = load_digits()                  # 1,797 digits, a fixed stratified 30% as test

Both give flattened images as float32 in [0, 1] and int64 labels 0-9; a problem is a
DataError (or an IdxError from pipeline/paper/idx.py) naming the file and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.paper.idx import IMAGES, LABELS, read_idx

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLIT_SEED = 0  # the digits' test split: fixed, so that --seed changes only the nets


class DataError(ValueError):
    """Data that cannot be used as given; the message says what to do."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (n, pixels) float32 in [0, 1]
    y: torch.Tensor  # (n,) int64 in 0-9


@dataclass(frozen=True)
class Data:
    name: str
    train: Split
    test: Split
    image_shape: tuple[int, int]
    test_split: str  # where the test set comes from


def load_idx_dir(folder: Path) -> Data:
    """The MNIST train and test sets from the IDX files in `folder`."""
    (train, train_shape), (test, test_shape) = (_idx_split(folder, *IDX_FILES[s])
                                                for s in ("train", "test"))
    if train_shape != test_shape:
        raise DataError(f"{folder}: the train images are {train_shape[0]}x{train_shape[1]}, "
                        f"the test images {test_shape[0]}x{test_shape[1]}")
    return Data(f"MNIST IDX files in {folder}", train, test, train_shape, "the t10k files")


def _idx_split(folder: Path, images_name: str, labels_name: str) -> tuple[Split, tuple]:
    images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
    images, labels = read_idx(images_path, IMAGES), read_idx(labels_path, LABELS)
    if len(images) == 0 or len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for the {len(images)} images "
                        f"of {images_path} (expected as many, at least one)")
    if labels.max() > 9:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0-9")
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)
    return Split(x, torch.from_numpy(labels.astype(np.int64))), tuple(images.shape[1:])


def _find(folder: Path, name: str) -> Path:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    raise DataError(f"{folder}: neither {name} nor {name}.gz is there (--idx needs the four "
                    f"MNIST files: {', '.join(n for pair in IDX_FILES.values() for n in pair)})")


def load_digits() -> Data:
    """scikit-learn's 8x8 digits, a fixed stratified 30% held out as the test set."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:
        raise DataError("the default data, scikit-learn's digits, needs scikit-learn: "
                        "pip install -e .[paper], or pass --idx DIR with the MNIST IDX "
                        "files") from err
    digits = sklearn_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.3, stratify=digits.target,
        random_state=SPLIT_SEED)  # the digits' pixels are 0-16

    def split(x, y) -> Split:
        return Split(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64))
    return Data("scikit-learn digits (8x8)", split(x_train, y_train), split(x_test, y_test),
                (8, 8), f"stratified 30% of the digits, random_state {SPLIT_SEED}")
