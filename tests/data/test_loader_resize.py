"""The train crop's resize: antialiased only when data.train_antialias asks for it.

Shards of one-pixel stripes, taken whole (crop area and aspect 1) and shrunk 2.8x: an
antialiased resize averages them to an even grey, a plain bilinear one samples them
into bands of dark and light (aliasing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from loader_helpers import config, pixels, shard, stripes_jpeg

from data_prep import sample
from pipeline.data import build_train_loader

SIDE, SIZE = 90, 32  # 2.8x, not a whole factor: plain bilinear hits stripes unevenly


@pytest.fixture(scope="module")
def stripes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stripes")
    sample.generate(root / "source", classes=2, train_per_class=4, val_per_class=1,
                    image=lambda width, height, label: stripes_jpeg(SIDE))
    shard(root / "source", root / "shards")
    return root / "shards"


def column_spread(backend: str, shards: Path, antialias: bool) -> float:
    """Standard deviation over the columns of the first batch's grey levels (0-255)."""
    cfg = config(shards, backend=backend, image_size=SIZE, crop_area=(1.0, 1.0),
                 crop_aspect=(1.0, 1.0), flip_prob=0.0, train_antialias=antialias)
    images, _ = next(iter(build_train_loader(cfg, 0, 1, torch.device("cpu"))))
    grey = pixels(images, cfg).mean(dim=(1, 2))  # (N, W): the mean of each column
    return float(grey[:, 2:-2].std(dim=1).mean())  # the borders clamp, leave them out


def test_dali_antialiases_the_train_resize_only_when_asked(stripes):
    plain, smooth = (column_spread("dali", stripes, aa) for aa in (False, True))
    assert plain > 40 and smooth < 20, (plain, smooth)


def test_webdataset_backend_always_antialiases(stripes):
    spread = column_spread("webdataset", stripes, False)
    assert spread < 20, spread
