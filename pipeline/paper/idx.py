"""The IDX format of the MNIST files, read strictly.

    array = read_idx(path)                      # numpy array, dims and dtype from the header
    images = read_idx(path, magic=IMAGES)       # and the file must be an image file

An IDX file is a header (two zero bytes, a type code, the number of dimensions, then each
dimension as a big-endian uint32) followed by exactly prod(dims) big-endian values. A
name ending in .gz is gunzipped first. Anything else (a wrong magic number, a missing or
extra byte, a file that is not gzip) is an IdxError naming the file and what was expected.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

# The type code (third byte) and the big-endian dtype it stands for.
DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES = 0x00000803  # unsigned bytes, 3 dims: count, rows, columns
LABELS = 0x00000801  # unsigned bytes, 1 dim: count


class IdxError(ValueError):
    """A file that is not the IDX file it should be; the message names it."""


def read_idx(path: Path, magic: int | None = None) -> np.ndarray:
    """The file's array; with `magic`, its magic number must be that one."""
    data = _read_bytes(Path(path))
    if len(data) < 4:
        raise IdxError(f"{path}: {len(data)} bytes, too short for an IDX header (4 bytes)")
    found = struct.unpack(">I", data[:4])[0]
    zeros, code, ndim = data[:2], data[2], data[3]
    if zeros != b"\0\0" or code not in DTYPES or ndim == 0:
        raise IdxError(f"{path}: magic number 0x{found:08x} is not IDX (expected 00 00, a "
                       f"type code in {[hex(c) for c in DTYPES]} and at least one dimension)")
    if magic is not None and found != magic:
        raise IdxError(f"{path}: magic number 0x{found:08x}, expected 0x{magic:08x} "
                       f"({_kind(magic)})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: {len(data)} bytes, too short for the header of {ndim} "
                       f"dimensions ({header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(DTYPES[code])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(f"{path}: {len(data)} bytes, expected {expected} for dims "
                       f"{list(dims)} of {dtype.itemsize}-byte values (truncated or padded?)")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise IdxError(f"{path}: not a readable gzip file ({err})") from err


def _kind(magic: int) -> str:
    return {IMAGES: "an image file: unsigned bytes, 3 dimensions",
            LABELS: "a label file: unsigned bytes, 1 dimension"}.get(magic, "IDX")
