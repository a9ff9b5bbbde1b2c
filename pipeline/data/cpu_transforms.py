"""The DALI graphs' image transforms on the CPU, for the webdataset backend.

Same parameter ranges and the same crop rule as DALI's image_random_crop (area uniform,
aspect log-uniform, 10 attempts, else the centered square), decoded by libjpeg-turbo
through simplejpeg. The decoder's DCT scaling (1/2, 1/4, 1/8) is used whenever the crop
stays at least `size` pixels after it, which skips most of the IDCT work for large
crops of large photos. Output is uint8 HWC; normalization happens on the device.
"""

from __future__ import annotations

import math

import numpy as np
import simplejpeg
from PIL import Image

from pipeline.config import DataConfig

Box = tuple[float, float, float, float]  # x, y, width, height in source pixels
NUM_ATTEMPTS = 10  # DALI's image_random_crop default, set explicitly in dali.py too
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def jpeg_size(jpg: bytes) -> tuple[int, int]:
    """(height, width) from the JPEG header, without decoding."""
    height, width, _, _ = simplejpeg.decode_jpeg_header(jpg)
    return height, width


def random_crop_box(height: int, width: int, rng: np.random.Generator,
                    area: tuple[float, float], aspect: tuple[float, float]) -> Box:
    """Inception-style crop: the fraction of the area and log(aspect) uniform."""
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(NUM_ATTEMPTS):
        target = rng.uniform(area[0], area[1]) * height * width
        ratio = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            x, y = rng.uniform() * (width - w), rng.uniform() * (height - h)
            return int(x), int(y), w, h
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def center_crop_box(height: int, width: int, size: int, shorter: int) -> Box:
    """The source window that 'resize shorter side to `shorter`, center-crop `size`' keeps."""
    side = size * min(height, width) / shorter
    return (width - side) / 2, (height - side) / 2, side, side


def decode_crop_resize(jpg: bytes, box: Box, size: int) -> np.ndarray:
    """The box of the JPEG, resized to size x size (bilinear, antialiased), uint8 HWC."""
    height, width = jpeg_size(jpg)
    x, y, w, h = box
    # The smallest DCT-scaled decode in which the box still spans >= size pixels.
    min_w = min(width, math.ceil(size * width / w))
    min_h = min(height, math.ceil(size * height / h))
    image = simplejpeg.decode_jpeg(jpg, colorspace="RGB", min_width=min_w, min_height=min_h)
    sy, sx = image.shape[0] / height, image.shape[1] / width
    window = (x * sx, y * sy, (x + w) * sx, (y + h) * sy)
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, box=window)
    return np.asarray(resized)


def jitter(image: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Brightness, contrast (around mid-grey) and saturation (around luma), as DALI's
    brightness_contrast and hsv do it."""
    brightness, contrast, saturation = factors
    out = brightness * (128 + contrast * (image.astype(np.float32) - 128))
    gray = out @ LUMA
    out = gray[..., None] + saturation * (out - gray[..., None])
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def train_image(jpg: bytes, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """Random-resized crop, optional colour jitter, random flip."""
    box = random_crop_box(*jpeg_size(jpg), rng, cfg.crop_area, cfg.crop_aspect)
    image = decode_crop_resize(jpg, box, cfg.image_size)
    if cfg.color_jitter > 0:
        image = jitter(image, rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter, 3))
    if rng.uniform() < cfg.flip_prob:
        image = image[:, ::-1]
    return image


def val_image(jpg: bytes, cfg: DataConfig) -> np.ndarray:
    """Shorter side to image_size * val_resize_ratio, then the centered image_size square."""
    shorter = round(cfg.image_size * cfg.val_resize_ratio)
    box = center_crop_box(*jpeg_size(jpg), cfg.image_size, shorter)
    return decode_crop_resize(jpg, box, cfg.image_size)
