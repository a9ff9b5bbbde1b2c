"""Photo-sized JPEG trees for the benchmarks, written by data_prep/sample.py.

    mean_bytes = photo_tree(root, images=2000, val_per_class=1)
"""

from __future__ import annotations

from pathlib import Path

from data_prep import sample

PHOTO = (500, 375)  # ImageNet's typical size; ~110 KB at quality 90, its average file
DISTINCT = 20  # per class, repeated: byte copying never looks inside, decoding barely cares


def photo_tree(root: Path, images: int, classes: int = 10, val_per_class: int = 0) -> float:
    """An ILSVRC2012-shaped tree of `images` train JPEGs; returns their mean size in bytes."""
    sample.generate(root, classes, images // classes, val_per_class, size=PHOTO,
                    distinct=DISTINCT)
    sizes = [p.stat().st_size for p in (root / "train").rglob("*.JPEG")]
    return sum(sizes) / len(sizes)
