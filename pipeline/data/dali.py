"""DALI pipelines for train and val, and the reader that runs one epoch of them.

One graph per split; only the devices differ: with a CUDA device JPEGs are decoded by
nvJPEG ("mixed", the hardware decoder on A100/H100) and every later op runs on the GPU;
with device_id=None all of it runs on DALI's CPU threads. Train builds a fresh pipeline
per epoch (the epoch's shard order and seed are arguments of the reader), so an epoch
is reproducible on its own and a resumed one starts from DALI's checkpoint of it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from data_prep.manifest import Shard, ShardError, Split
from pipeline.config import DataConfig
from pipeline.data import epochs
from pipeline.data.batches import RawBatch, dali_sources, parse_labels, to_model_layout

READER = "reader"
OUTPUTS = ["images", "cls", "source"]
# nvJPEG grows its buffers on demand; sizes from NVIDIA's ResNet-50 recipe avoid
# reallocations (and their device syncs) during the first epoch.
DEVICE_MEMORY_PADDING = 211_025_920
HOST_MEMORY_PADDING = 140_544_512
# How DALI's webdataset reader names a sample that lacks a file ("Underful sample ...").
INDEX_LINE = re.compile(r'index file at "(?P<index>[^"]+)" line (?P<line>\d+)')


def device_id_of(device: torch.device) -> int | None:
    """DALI's device_id: the CUDA index, or None for a CPU-only pipeline."""
    if device.type == "cuda":
        return device.index if device.index is not None else torch.cuda.current_device()
    return None


def _read(shards: tuple[Shard, ...], rank: int, world: int, shuffle: bool, fill: int):
    """JPEG bytes, .cls bytes and 'TAR:OFFSET:MEMBER' of the rank's range of the shards.

    stick_to_shard + pad_last_batch keep a rank inside its own range; a missing .cls or
    .jpg is an error naming the tar, never an empty tensor or a silent skip.
    """
    jpegs, cls = fn.readers.webdataset(
        paths=[str(s.tar) for s in shards], index_paths=[str(s.index) for s in shards],
        ext=["jpg", "cls"], missing_component_behavior="error", random_shuffle=shuffle,
        initial_fill=fill, shard_id=rank, num_shards=world, stick_to_shard=True,
        pad_last_batch=True, name=READER)
    return jpegs, fn.pad(cls, fill_value=0), fn.pad(fn.get_property(jpegs, key="source_info"),
                                                     fill_value=0)


def _decoder(device_id: int | None, cfg: DataConfig) -> dict:
    if device_id is None:
        return {"device": "cpu"}
    return {"device": "mixed", "hw_decoder_load": cfg.hw_decoder_load,
            "device_memory_padding": DEVICE_MEMORY_PADDING,
            "host_memory_padding": HOST_MEMORY_PADDING}


def _normalize(images, cfg: DataConfig, **crop_and_mirror):
    """Mean/std on the 0-255 scale, straight to the output dtype and layout."""
    return fn.crop_mirror_normalize(
        images, dtype=types.FLOAT16 if cfg.dtype == "float16" else types.FLOAT,
        output_layout="HWC" if cfg.channels_last else "CHW",
        mean=[255 * m for m in cfg.mean], std=[255 * s for s in cfg.std], **crop_and_mirror)


def _jitter(images, strength: float):
    """Brightness, contrast and saturation factors, each uniform in [1-s, 1+s]."""
    factors = [fn.random.uniform(range=[1 - strength, 1 + strength]) for _ in range(3)]
    images = fn.brightness_contrast(images, brightness=factors[0], contrast=factors[1])
    return fn.hsv(images, saturation=factors[2])


@pipeline_def
def _train_graph(cfg: DataConfig, shards: tuple[Shard, ...], rank: int, world: int,
                 decoder: dict):
    jpegs, cls, source = _read(shards, rank, world, True, cfg.shuffle_buffer)
    images = fn.decoders.image_random_crop(
        jpegs, output_type=types.RGB, random_area=list(cfg.crop_area),
        random_aspect_ratio=list(cfg.crop_aspect), num_attempts=10,  # = cpu_transforms'
        **decoder)
    images = fn.resize(images, size=[cfg.image_size, cfg.image_size],
                       antialias=cfg.train_antialias)
    if cfg.color_jitter > 0:
        images = _jitter(images, cfg.color_jitter)
    mirror = fn.random.coin_flip(probability=cfg.flip_prob)
    return _normalize(images, cfg, mirror=mirror), cls, source


@pipeline_def
def _val_graph(cfg: DataConfig, shards: tuple[Shard, ...], rank: int, world: int,
               decoder: dict):
    jpegs, cls, source = _read(shards, rank, world, False, 1)
    images = fn.decoders.image(jpegs, output_type=types.RGB, **decoder)
    images = fn.resize(images, resize_shorter=round(cfg.image_size * cfg.val_resize_ratio),
                       antialias=True)
    crop = [cfg.image_size, cfg.image_size]
    return _normalize(images, cfg, crop=crop, crop_pos_x=0.5, crop_pos_y=0.5), cls, source


@contextmanager
def _named_errors() -> Iterator[None]:
    """DALI names the index line of a sample that lacks a file; this names the sample."""
    try:
        yield
    except RuntimeError as err:
        match = INDEX_LINE.search(str(err))
        if match is None:
            raise
        detail = next(line for line in str(err).splitlines() if INDEX_LINE.search(line))
        raise ShardError(_describe_index_line(Path(match["index"]), int(match["line"]),
                                              detail)) from None


def _describe_index_line(index: Path, line: int, detail: str) -> str:
    fields = index.read_text().splitlines()[line].split()  # line 0 is the header
    exts, names = fields[0::4], fields[3::4]
    key = names[0][: -len(exts[0]) - 1] if names else "?"
    missing = [f"{key}.{ext}" for ext in ("jpg", "cls") if ext not in exts]
    return (f"shard {index.with_suffix('.tar').name}, sample {key}: "
            f"{' and '.join(missing) or 'a file'} is missing (DALI: {detail.strip()})")


class DaliEpoch:
    """Batches of one pass of a pipeline through DALIGenericIterator, as RawBatch."""

    def __init__(self, pipe: Pipeline, cfg: DataConfig, skip: int = 0,
                 rank_samples: int | None = None):
        """Train (rank_samples None): full batches only. Val: FILL pads the rank's last
        batch and `rank_samples` marks which samples are real."""
        self.cfg, self.rank_samples, self.step = cfg, rank_samples, 0
        policy = LastBatchPolicy.DROP if rank_samples is None else LastBatchPolicy.FILL
        with _named_errors():  # building starts the reader, which may already fail
            self.iterator = DALIGenericIterator([pipe], OUTPUTS, reader_name=READER,
                                                last_batch_policy=policy, auto_reset=False)
            for _ in range(skip):  # deterministic skip: only when there is no checkpoint
                next(self.iterator)

    def __next__(self) -> RawBatch:
        with _named_errors():
            out = next(self.iterator)[0]
        source = out["source"]

        def sources() -> list[tuple[str, str]]:
            return dali_sources(source)

        labels = parse_labels(out["cls"], sources)
        images = to_model_layout(out["images"], self.cfg.channels_last, self.cfg.dtype)
        valid = None
        if self.rank_samples is not None:
            real = epochs.valid_in_batch(self.rank_samples, self.step, self.cfg.batch_size)
            valid = torch.arange(len(labels)) < real
        self.step += 1
        return RawBatch(images, labels, sources, valid)

    def checkpoint(self) -> str:
        """DALI's reader + RNG state after the batches taken so far, as ASCII."""
        return base64.b64encode(self.iterator.checkpoints()[0]).decode()

    def close(self) -> None:
        self.iterator = None


class DaliBackend:
    """Opens DALI epochs for one rank."""

    def __init__(self, cfg: DataConfig, split: Split, rank: int, world: int,
                 device: torch.device):
        self.cfg, self.split, self.rank, self.world = cfg, split, rank, world
        self.device_id = device_id_of(device)

    def train_epoch(self, epoch: int, start: int, checkpoint: str | None) -> DaliEpoch:
        """The epoch from batch `start`: restored from `checkpoint`, else by running
        `start` batches (exact, but they are decoded again)."""
        cfg = self.cfg
        shards = epochs.epoch_shards(self.split, cfg.seed, epoch, cfg.shuffle_shards)
        pipe = _train_graph(
            cfg, shards, self.rank, self.world, _decoder(self.device_id, cfg),
            batch_size=cfg.batch_size, num_threads=max(1, cfg.num_workers),
            device_id=self.device_id, seed=epochs.train_seed(cfg.seed, self.rank, epoch),
            prefetch_queue_depth=cfg.prefetch, enable_checkpointing=True,
            checkpoint=base64.b64decode(checkpoint) if checkpoint else None)
        return DaliEpoch(pipe, cfg, skip=start if checkpoint is None else 0)

    def val_epoch(self) -> DaliEpoch:
        """Every val sample of the rank once, then padding up to epochs.val_steps batches."""
        cfg = self.cfg
        pipe = _val_graph(
            cfg, self.split.shards, self.rank, self.world, _decoder(self.device_id, cfg),
            batch_size=cfg.batch_size, num_threads=max(1, cfg.num_workers),
            device_id=self.device_id, seed=epochs.derive_seed(cfg.seed, self.rank),
            prefetch_queue_depth=cfg.prefetch)
        start, end = epochs.rank_range(self.split.num_samples, self.rank, self.world)
        return DaliEpoch(pipe, cfg, rank_samples=end - start)
