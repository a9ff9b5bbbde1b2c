"""Small generated files of each kind that once ended a sharding run or a training run:
decoder errors at open and at load, JPEGs whose marker structure DALI refuses, orientation
recorded outside EXIF, and formats that need a decoder this machine may lack.

    files = odd_files()        # {name: (bytes, what shard.py must do with it)}
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, PngImagePlugin

from data_prep.images import ORIENTATION

# What shard.py must do with a file: store it ("sample"), or reject it with a reason that
# holds this text.
SAMPLE = "sample"


def jpeg(width: int = 48, height: int = 32) -> bytes:
    pixels = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def png_claiming(width: int, height: int) -> bytes:
    """An 8x8 PNG whose header says width x height."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def png_with_text_bomb() -> bytes:
    """A compressed text chunk that inflates past Pillow's limit: ValueError at open."""
    data = png_claiming(8, 8)
    payload = b"Comment\x00\x00" + zlib.compress(b"A" * (8 << 20), 9)
    chunk = struct.pack(">I", len(payload)) + b"zTXt" + payload + \
        struct.pack(">I", zlib.crc32(b"zTXt" + payload) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]


def dds_of_unknown_format() -> bytes:
    """A DDS header with a FourCC Pillow does not implement: NotImplementedError at open."""
    header = struct.pack("<4sIIIIIII", b"DDS ", 124, 0x1007, 8, 8, 0, 0, 0) + bytes(44)
    pixel_format = struct.pack("<II4sIIIII", 32, 0x4, b"XYZW", 0, 0, 0, 0, 0)
    return header + pixel_format + struct.pack("<IIIII", 0x1000, 0, 0, 0, 0) + bytes(64)


def icns_bomb() -> bytes:
    """An icon whose 128x128 slot holds a PNG that claims 30000x30000: Pillow opens it and
    raises DecompressionBombError only while loading."""
    inner = png_claiming(30000, 30000)
    entry = b"ic07" + struct.pack(">I", 8 + len(inner)) + inner
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def tiff_past_its_end() -> bytes:
    """A TIFF whose strip offset points past the end of the file."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(out, format="TIFF")
    data = bytearray(out.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        tag, kind, count, _ = struct.unpack_from("<HHII", data, at)
        if tag == 273:  # StripOffsets
            struct.pack_into("<HHII", data, at, tag, kind, count, 10**6)
    return bytes(data)


def eps() -> bytes:
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
            b"0 0 1 setrgbcolor 0 0 16 16 rectfill\nshowpage\n%%EOF\n")


def marked_block() -> Image.Image:
    """40 wide, 20 high, black with a white top-left quarter: shows how it was turned."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:10, :20] = 255
    return Image.fromarray(pixels)


def png_with_xmp_orientation(orientation: int) -> bytes:
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
           '02/22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/"'
           f' tiff:Orientation="{orientation}"/></rdf:RDF></x:xmpmeta>')
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    out = io.BytesIO()
    marked_block().save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def png_with_imagemagick_orientation(orientation: int) -> bytes:
    """ImageMagick's way: the EXIF block, hex-encoded in a "Raw profile type exif" chunk."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    raw = exif.tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(raw):8d}\n{raw.hex()}\n", zip=True)
    out = io.BytesIO()
    marked_block().save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def odd_files(ghostscript: bool) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, SAMPLE or a text the reject's reason holds)."""
    good = jpeg()
    adobe = b"\xff\xee" + struct.pack(">H", 14) + b"Adobe\x00\x64"  # says 14, holds 7
    return {
        "text_bomb_png": (png_with_text_bomb(), "ValueError: Decompressed data too large"),
        "unknown_dds": (dds_of_unknown_format(), "NotImplementedError: Unimplemented pixel"),
        "icns_bomb": (icns_bomb(), "too large to decode safely"),
        "tiff_past_end": (tiff_past_its_end(), "corrupt or truncated image data"),
        "eps": (eps(), SAMPLE if ghostscript else "no decoder on this machine for EPS"),
        "stray_ff00": (good[:2] + b"\xff\x00" + good[2:], SAMPLE),
        "bytes_between_segments": (good[:20] + b"\x00\x13\x37" + good[20:], SAMPLE),
        "truncated_app14": (good[:2] + adobe + good[2:], SAMPLE),
        "xmp_orientation_6": (png_with_xmp_orientation(6), SAMPLE),
        "imagemagick_orientation_3": (png_with_imagemagick_orientation(3), SAMPLE),
    }
