"""Checks one input image and turns it into the RGB JPEG bytes a shard stores.

ImageNet's train set holds CMYK JPEGs, a PNG named `.JPEG` and grayscale JPEGs; GPU
decoders mishandle CMYK, so every such file is converted to an RGB JPEG and the
conversion is recorded. Files that cannot be used raise `RejectedImage` with a reason.

One orientation rule for every reader: DALI's decoder applies an EXIF orientation tag,
the webdataset backend (simplejpeg) ignores it. So a shard never holds a tag that turns
the image: an image that `ImageOps.exif_transpose` would turn (EXIF, XMP, ImageMagick's
PNG text chunk) is re-encoded upright (recorded as `exif_orientation_N`).

Any error of a decoder plugin, at open, at load or at conversion, makes the input a
reject whose reason names the error: one odd file never ends a run. A format whose
decoder this machine lacks (EPS and PostScript need Ghostscript; WMF and EMF render on
Windows only) is said to be that. Copy mode stores a JPEG's own bytes only when its
marker structure up to the scan is regular: Pillow decodes stray bytes between segments
or a segment that overruns the next marker, DALI's decoder refuses them ("Invalid
marker"), so such a file is re-encoded and listed with the reason (`jpeg_structure_...`).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

JPEG_EOI = b"\xff\xd9"
ORIENTATION = 0x0112  # the EXIF tag; 1 is upright, 5-8 swap width and height

# Pillow mode/format -> the name of the repair recorded in the manifest.
_MODE_REPAIRS = {"CMYK": "cmyk_to_rgb", "L": "grayscale_to_rgb", "1": "grayscale_to_rgb",
                 **dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N"), "gray16_to_rgb")}
# Pixels with no fixed range: scaling them to 0-255 would be a guess.
_UNSCALABLE = {"I": "32-bit integer", "F": "32-bit float"}


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


# Formats Pillow knows but renders through a program or an OS this machine may lack.
_EXTERNAL_DECODERS = {"EPS": "install Ghostscript (gs) or convert it to PNG or JPEG",
                      "WMF": "Pillow renders WMF/EMF on Windows only; convert it to PNG",
                      "EMF": "Pillow renders WMF/EMF on Windows only; convert it to PNG"}


def prepare_image(raw: bytes, options: EncodeOptions) -> PreparedImage:
    """Returns the bytes to store for one input file, or raises RejectedImage."""
    if not raw:
        raise RejectedImage("empty file")
    try:
        return _prepare(raw, options)
    except RejectedImage:
        raise
    except MemoryError:
        raise RejectedImage("too large to decode in this machine's memory") from None
    except Exception as exc:  # in memory only: no disk of this machine is involved here
        raise RejectedImage(f"cannot decode or convert it: {_named(exc)}") from None


def _prepare(raw: bytes, options: EncodeOptions) -> PreparedImage:
    image = _open(raw)
    conversions = _repairs_needed(image)
    if image.format != "JPEG":  # re-encoded anyway; decoded first because some loaders
        _decode(image)  # turn the image themselves (TIFF) and a PNG's tag is read from it
    orientation = _orientation(image)
    if orientation != 1:
        conversions.append(f"exif_orientation_{orientation}")
    upright = image.size[::-1] if orientation in (5, 6, 7, 8) else image.size
    target = _resized_size(upright, options.resize_shorter)
    if not conversions and target == image.size:
        irregular = jpeg_structure_problem(raw)
        if irregular is None:
            _check_complete_jpeg(raw, image)
            return PreparedImage(raw, image.width, image.height)
        conversions.append(f"jpeg_structure_{irregular}")
    if target != upright:
        conversions.append(f"resize_{upright[0]}x{upright[1]}_to_{target[0]}x{target[1]}")
    data, size = _reencode(image, orientation, target, options.quality)
    return PreparedImage(data, size[0], size[1], conversions)


def is_repair(conversion: str) -> bool:
    """Repairs change the colour model or format; a resize is a requested option."""
    return not conversion.startswith("resize_")


def _open(raw: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Over Pillow's MAX_IMAGE_PIXELS it warns, over twice that it raises: both are
            # rejects, so that no image is decoded at a size nobody meant to train on.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(raw))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _too_large(exc) from None
    except UnidentifiedImageError:
        raise RejectedImage("not an image (no known image header)") from None
    except Exception as exc:  # any plugin's error: offsets past the end, a zero axis, ...
        raise RejectedImage(f"unreadable image header: {_named(exc)}") from None


def _repairs_needed(image: Image.Image) -> list[str]:
    if image.mode in _UNSCALABLE:
        raise RejectedImage(f"{_UNSCALABLE[image.mode]} pixels (Pillow mode {image.mode}) "
                            "have no fixed range; convert the file to 8-bit RGB first")
    repairs = []
    if image.format != "JPEG":
        repairs.append(f"{(image.format or 'unknown').lower()}_to_jpeg")
    if image.mode != "RGB":
        repairs.append(_MODE_REPAIRS.get(image.mode, f"{image.mode.lower()}_to_rgb"))
    return repairs


def _orientation(image: Image.Image) -> int:
    """The orientation `ImageOps.exif_transpose` applies (EXIF, or XMP's tiff:Orientation,
    or ImageMagick's "Raw profile type exif"); 1 when there is none. A JPEG's is read from
    its header; other formats are decoded before (a TIFF loader turns the image itself and
    drops the tag)."""
    try:
        return int(image.getexif().get(ORIENTATION, 1))
    except (SyntaxError, ValueError, TypeError, KeyError, struct.error) as exc:  # broken EXIF
        warnings.warn(f"unreadable EXIF ({exc}): orientation taken as upright", stacklevel=2)
        return 1


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


def jpeg_structure_problem(raw: bytes) -> str | None:
    """Why the marker segments before the first scan are not back to back (the name of the
    defect), or None. Reads the header only: every segment's marker and length."""
    pos = 2  # after SOI
    while pos < len(raw):
        if raw[pos] != 0xFF:
            return "bytes_between_segments"
        while pos < len(raw) and raw[pos] == 0xFF:  # fill bytes before a marker are allowed
            pos += 1
        if pos >= len(raw):
            return "ends_in_its_header"
        marker = raw[pos]
        if marker == 0x00:
            return "stray_ff00_before_a_marker"
        if marker == 0xDA:  # start of scan: the header was regular
            return None
        if marker in (0x01, *range(0xD0, 0xD8)):  # TEM, RSTn: no length
            pos += 1
            continue
        if marker == 0xD8:
            return "second_start_of_image"
        if pos + 2 >= len(raw):
            return "ends_in_its_header"
        length = int.from_bytes(raw[pos + 1:pos + 3], "big")
        if length < 2 or pos + 1 + length > len(raw):
            return "segment_overruns_the_file"
        pos += 1 + length
    return "no_scan"


def _decode(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except Exception as exc:  # any plugin's error while decoding
        if isinstance(exc, Image.DecompressionBombError):  # some plugins size it only now
            raise _too_large(exc) from None
        fix = _EXTERNAL_DECODERS.get(image.format or "")
        if fix:
            raise RejectedImage(f"no decoder on this machine for {image.format} ({_named(exc)}):"
                                f" {fix}") from None
        raise RejectedImage(f"corrupt or truncated image data: {_named(exc)}") from None
    return image


def _too_large(exc: Exception) -> RejectedImage:
    return RejectedImage(f"too large to decode safely ({exc}); shrink it below "
                         f"{Image.MAX_IMAGE_PIXELS:,} pixels")


def _named(exc: Exception) -> str:
    """The error with its type: `ValueError: ...`, as a reason names it (OSError's own
    messages already say what happened, and the tests and users know them so)."""
    return str(exc) if type(exc) is OSError else f"{type(exc).__name__}: {exc}"


def _reencode(image: Image.Image, orientation: int, size: tuple[int, int], quality: int):
    decoded = _decode(image)
    if orientation != 1:
        decoded = ImageOps.exif_transpose(decoded)
    rgb = _to_rgb(decoded)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)  # no exif=: the shard holds no tag
    return out.getvalue(), rgb.size


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16"):
        # Pillow's convert() clips 16-bit values at 255 (a near-white image); scale them.
        # (16-bit RGB(A) PNGs Pillow already opens as 8-bit RGB(A).)
        wide = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    try:
        return image.convert("RGB")
    except Exception as exc:  # a mode Pillow cannot map, or a plugin's late error
        raise RejectedImage(f"cannot convert Pillow mode {image.mode} to RGB: "
                            f"{_named(exc)}") from None
