"""A grid of training images as the model receives them, the normalization undone.

    path = save_grid(images, data_cfg, run_dir / "samples" / "step-00000000.png")

The batch comes straight from the train loader (after crop, flip, jitter, normalization
and the dtype cast), so the grid shows what the augmentation really does.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.config import DataConfig

MAX_IMAGES = 16
GAP = 2  # white pixels between the images
MIN_TILE = 128  # smaller images (test and demo sizes) are enlarged, pixels kept square


def grid_array(images: torch.Tensor, cfg: DataConfig) -> np.ndarray:
    """HxWx3 uint8: up to 16 images of an NCHW batch, in rows of 4."""
    batch = images[:MAX_IMAGES].detach().float().cpu()
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    pixels = ((batch * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()  # NHWC
    count, height, width = pixels.shape[:3]
    columns = min(4, count)
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + GAP) - GAP, columns * (width + GAP) - GAP, 3), 255,
                   np.uint8)
    for i, image in enumerate(pixels):
        top, left = (i // columns) * (height + GAP), (i % columns) * (width + GAP)
        grid[top:top + height, left:left + width] = image
    return grid


def save_grid(images: torch.Tensor, cfg: DataConfig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = grid_array(images, cfg)
    zoom = max(1, math.ceil(MIN_TILE / images.shape[-2]))
    if zoom > 1:  # nearest neighbour: every stored pixel is one the model saw
        grid = grid.repeat(zoom, axis=0).repeat(zoom, axis=1)
    Image.fromarray(grid).save(path)
    return path
