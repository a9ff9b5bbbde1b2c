"""What the loaders hand the model: shapes, dtypes, layouts, value ranges and labels."""

from __future__ import annotations

import pytest
import torch
from loader_helpers import BATCH, config, epoch, samples

from pipeline.data import build_train_loader, build_val_loader

CPU = torch.device("cpu")
BACKENDS = ["dali", "webdataset"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def value_bounds(cfg) -> tuple[float, float]:
    """The normalized values of pixel 0 and 255, widened by the dtype's rounding."""
    low = min((0 - m) / s for m, s in zip(cfg.mean, cfg.std, strict=True))
    high = max((1 - m) / s for m, s in zip(cfg.mean, cfg.std, strict=True))
    return low - 0.02, high + 0.02


def check_images(images: torch.Tensor, cfg) -> None:
    assert images.shape == (BATCH, 3, cfg.image_size, cfg.image_size)
    assert images.dtype == DTYPES[cfg.dtype]
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    assert images.is_contiguous(memory_format=layout)
    low, high = value_bounds(cfg)
    assert low <= images.float().min() and images.float().max() <= high
    assert images.float().std() > 0.1  # an image, not a constant


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, channels_last, jitter", [
    ("float32", True, 0.0), ("float16", False, 0.0), ("bfloat16", True, 0.3)])
def test_train_batches_are_model_ready(shards, backend, dtype, channels_last, jitter):
    cfg = config(shards, backend=backend, dtype=dtype, channels_last=channels_last,
                 color_jitter=jitter)
    truth = samples(shards, "train")
    loader = build_train_loader(cfg, 0, 1, CPU)
    batches = epoch(loader)
    assert len(batches) == len(loader) == 50 // BATCH
    for images, labels, keys in batches:
        check_images(images, cfg)
        assert labels.dtype == torch.int64
        assert labels.tolist() == [truth[key]["label"] for key in keys]
    assert loader.last_wait_s > 0 and loader.wait_s >= loader.last_wait_s


@pytest.mark.parametrize("backend", BACKENDS)
def test_val_batches_are_model_ready_and_masked(shards, backend):
    cfg = config(shards, backend=backend, channels_last=False)
    truth = samples(shards, "val")
    loader = build_val_loader(cfg, 0, 1, CPU)
    seen = []
    for images, labels, valid in loader:
        check_images(images, cfg)
        assert valid.dtype == torch.bool and valid.shape == (BATCH,)
        rows = zip(loader.last_keys, labels.tolist(), valid.tolist(), strict=True)
        real = [(key, label) for key, label, ok in rows if ok]
        assert all(truth[key]["label"] == label for key, label in real)
        seen += [key for key, _ in real]
    assert len(loader) == 4 and sorted(seen) == sorted(truth)  # 15 real + 1 padding
