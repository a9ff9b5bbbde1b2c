"""Stored JPEGs decoded by DALI's CPU decoder, the one the trainer's pipeline uses, so that
a shard that passes `--verify` cannot stop training on a sample (Pillow decodes some
files that DALI refuses: stray bytes between marker segments, a segment that overruns).

    found = dali_sizes({"n01440764_10026": jpeg_bytes, ...})
    found["n01440764_10026"]   # (height, width), or the decoder's error as a string

Decoded in batches through one pipeline per process; a batch that fails is split in
halves until the refused files are found, so one bad file costs a few decodes, not one
pipeline per file.
"""

from __future__ import annotations

import numpy as np

BATCH = 32
_pipe = None  # this process's pipeline; rebuilt after a failed batch


def dali_sizes(images: dict[str, bytes]) -> dict[str, tuple[int, int] | str]:
    keys, found = list(images), {}
    for start in range(0, len(keys), BATCH):
        _decode_or_split(keys[start:start + BATCH], images, found)
    return found


def _decode_or_split(keys: list[str], images: dict[str, bytes], found: dict) -> None:
    try:
        shapes = _decode([images[k] for k in keys])
    except RuntimeError as exc:
        global _pipe
        _pipe = None  # a pipeline that raised is not reused
        if len(keys) == 1:
            found[keys[0]] = _first_line(exc)
            return
        half = len(keys) // 2
        _decode_or_split(keys[:half], images, found)
        _decode_or_split(keys[half:], images, found)
        return
    found.update(zip(keys, shapes, strict=True))


def _decode(batch: list[bytes]) -> list[tuple[int, int]]:
    global _pipe
    if _pipe is None:
        _pipe = _build()
    _pipe.feed_input("jpegs", [np.frombuffer(data, dtype=np.uint8) for data in batch])
    (decoded,) = _pipe.run()
    return [tuple(decoded[i].shape()[:2]) for i in range(len(batch))]


def _build():
    from nvidia.dali import fn, pipeline_def, types  # only --verify pays for the import

    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, prefetch_queue_depth=1,
                  exec_async=False, exec_pipelined=False)
    def decode():
        jpegs = fn.external_source(name="jpegs", dtype=types.UINT8)
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)

    pipe = decode()
    pipe.build()
    return pipe


def _first_line(exc: Exception) -> str:
    """DALI's own cause ("nvImageCodec failure: ..."), not its traceback of our pipeline."""
    text = str(exc)
    tail = text.split("encountered:", 1)[-1]
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return (lines or [type(exc).__name__])[0][:200]
