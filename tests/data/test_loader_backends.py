"""The webdataset fallback does what the DALI pipelines do: labels, crops, flips, val."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loader_helpers import config, crop_geometry, epoch, pixels

from pipeline.data import build_train_loader, build_val_loader

CPU = torch.device("cpu")
BACKENDS = ["dali", "webdataset"]


def train_crops(cfg, epochs: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(area fractions, flips, key -> label) over several epochs of one rank."""
    loader = build_train_loader(cfg, 0, 1, CPU)
    images, labels = [], {}
    for _ in range(epochs):
        for batch, batch_labels, keys in epoch(loader):
            images.append(batch)
            labels.update(zip(keys, batch_labels.tolist(), strict=True))
    area, flipped = crop_geometry(torch.cat(images), cfg)
    return area, flipped, labels


def test_backends_agree_on_labels_and_crop_statistics(shards):
    """192 crops each: the mean area fraction and the flip rate match within noise."""
    dali = train_crops(config(shards, backend="dali"), 4)
    fallback = train_crops(config(shards, backend="webdataset"), 4)
    assert dali[2] == {k: v for k, v in fallback[2].items() if k in dali[2]}
    for area, flipped, _ in (dali, fallback):
        assert 0.07 <= area.min() and area.max() <= 1.03  # inside crop_area (0.08, 1)
        assert 0.35 < area.mean() < 0.65 and 0.35 < flipped.mean() < 0.65
    assert abs(dali[0].mean() - fallback[0].mean()) < 0.06
    assert abs(dali[1].mean() - fallback[1].mean()) < 0.15


@pytest.mark.parametrize("backend", BACKENDS)
def test_crop_and_flip_settings_are_obeyed(shards, backend):
    cfg = config(shards, backend=backend, crop_area=(0.5, 0.5), flip_prob=1.0)
    area, flipped, _ = train_crops(cfg, 1)
    assert abs(area.mean() - 0.5) < 0.05 and flipped.all()


def test_backends_agree_on_val_images(shards):
    """Resize-shorter and center crop: the same pixels up to resampling differences."""
    seen: dict[str, list] = {}
    for backend in BACKENDS:
        cfg = config(shards, backend=backend)
        loader = build_val_loader(cfg, 0, 1, CPU)
        for images, labels, valid in loader:
            for key, image, label, ok in zip(loader.last_keys, pixels(images, cfg), labels,
                                             valid, strict=True):
                if ok:
                    seen.setdefault(key, []).append((image, int(label)))
    for (dali_image, dali_label), (image, label) in seen.values():
        assert dali_label == label
        assert (dali_image - image).abs().mean() < 4  # of 255
