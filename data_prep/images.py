"""Checks one input image and turns it into the RGB JPEG bytes a shard stores.

ImageNet's train set holds CMYK JPEGs, a PNG named `.JPEG` and grayscale JPEGs; GPU
decoders mishandle CMYK, so every such file is converted to an RGB JPEG and the
conversion is recorded. Files that cannot be used raise `RejectedImage` with a reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

JPEG_EOI = b"\xff\xd9"

# Pillow mode/format -> the name of the repair recorded in the manifest.
_MODE_REPAIRS = {"CMYK": "cmyk_to_rgb", "L": "grayscale_to_rgb", "1": "grayscale_to_rgb"}


class RejectedImage(Exception):
    """The input cannot go into a shard; str(exc) is the reason shown to the user."""


@dataclass(frozen=True)
class EncodeOptions:
    resize_shorter: int | None = None  # None: keep the original pixels (copy mode)
    quality: int = 95  # JPEG quality whenever we encode (repairs and resizes)


@dataclass
class PreparedImage:
    data: bytes
    width: int
    height: int
    conversions: list[str] = field(default_factory=list)


def prepare_image(raw: bytes, options: EncodeOptions) -> PreparedImage:
    """Returns the bytes to store for one input file, or raises RejectedImage."""
    if not raw:
        raise RejectedImage("empty file")
    image = _open(raw)
    conversions = _repairs_needed(image)
    target = _resized_size(image.size, options.resize_shorter)
    if not conversions and target == image.size:
        _check_complete_jpeg(raw, image)
        return PreparedImage(raw, image.width, image.height)
    if target != image.size:
        conversions.append(f"resize_{image.width}x{image.height}_to_{target[0]}x{target[1]}")
    data, size = _reencode(image, target, options.quality)
    return PreparedImage(data, size[0], size[1], conversions)


def is_repair(conversion: str) -> bool:
    """Repairs change the colour model or format; a resize is a requested option."""
    return not conversion.startswith("resize_")


def _open(raw: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise RejectedImage("not an image (no known image header)") from None
    except OSError as exc:
        raise RejectedImage(f"unreadable image header: {exc}") from None


def _repairs_needed(image: Image.Image) -> list[str]:
    repairs = []
    if image.format != "JPEG":
        repairs.append(f"{(image.format or 'unknown').lower()}_to_jpeg")
    if image.mode != "RGB":
        repairs.append(_MODE_REPAIRS.get(image.mode, f"{image.mode.lower()}_to_rgb"))
    return repairs


def _resized_size(size: tuple[int, int], shorter: int | None) -> tuple[int, int]:
    width, height = size
    if shorter is None or min(width, height) <= shorter:
        return size
    scale = shorter / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_complete_jpeg(raw: bytes, image: Image.Image) -> None:
    """A JPEG that ends in its EOI marker is complete; anything else must decode.

    Decoding every image would cap copy mode at ~1,000 images/s per core; checking
    the end marker is free and catches truncated downloads. Files with trailing bytes
    after EOI are rare and get the full decode.
    """
    if raw.rstrip(b"\x00")[-2:] == JPEG_EOI:
        return
    _decode(image)


def _decode(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise RejectedImage(f"corrupt or truncated image data: {exc}") from None
    return image


def _reencode(image: Image.Image, size: tuple[int, int], quality: int):
    rgb = _decode(image).convert("RGB")
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return out.getvalue(), rgb.size
