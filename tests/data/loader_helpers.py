"""Helpers for the loader tests: shards of coordinate-ramp images, configs, readers.

Every image is a ramp, red = x and green = y across the whole picture, so a crop's
extent and a flip can be read back from the pixels a loader returns.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from data_prep.manifest import read_manifest
from pipeline.config import DataConfig
from pipeline.files import file_sha256

REPO = Path(__file__).resolve().parents[2]
TREE = dict(classes=5, train_per_class=10, val_per_class=3)  # 50 train: a remainder at 1-3 ranks
BATCH = 4


def ramp_jpeg(width: int, height: int, label: int) -> bytes:
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    blue = np.full((height, width), 40.0 * label + 20)
    image = Image.fromarray(np.stack([x, y, blue], -1).round().astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def stripes_jpeg(side: int) -> bytes:
    """A grey square of one-pixel black and white columns: all detail, no average change."""
    columns = np.arange(side) % 2 * 255
    image = Image.fromarray(np.repeat(columns[None, :, None], side, 0).repeat(3, 2)
                            .astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=100, subsampling=0)
    return out.getvalue()


def ramp_shards(root: Path) -> Path:
    """50 train samples in 7 shards of 8 (the last holds 2), 15 val samples in 2 shards."""
    from data_prep import sample
    sample.generate(root / "source", **TREE, image=ramp_jpeg)
    shard(root / "source", root / "shards")
    return root / "shards"


def shard(source: Path, out: Path, shard_size: int = 8) -> None:
    command = [sys.executable, str(REPO / "data_prep" / "shard.py"), "--source", str(source),
               "--out", str(out), "--shard-size", str(shard_size), "--workers", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr


def config(shards: Path, **changes) -> DataConfig:
    """Small and quick: 32 px, batches of 4, one worker, a small shuffle buffer."""
    base = DataConfig(shards=str(shards), image_size=32, batch_size=BATCH, num_workers=1,
                      shuffle_buffer=8, prefetch=1, return_keys=True)
    return replace(base, **changes)


def samples(shards: Path, split: str) -> dict[str, dict]:
    """key -> {label, shard} of every sample, read straight from the tars."""
    out = {}
    for entry in read_manifest(shards / split)["shards"]:
        for s in wds.WebDataset(str(shards / split / entry["name"]), shardshuffle=False):
            out[s["__key__"]] = {"label": int(s["cls"]), "shard": entry["name"]}
    return out


def epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """The rest of the loader's current epoch as (images, labels, keys) per batch."""
    return [(images, labels, list(loader.last_keys)) for images, labels in loader]


def stopped_after(cfg: DataConfig, batches: int, rank: int, world: int,
                  device: torch.device) -> dict:
    """The state a run saves after training on `batches` batches, through JSON."""
    from pipeline.data import build_train_loader
    loader = build_train_loader(cfg, rank, world, device)
    iterator = iter(loader)
    for _ in range(batches):
        next(iterator)
        if loader.iteration == loader.batches_per_epoch:  # a new epoch needs a new iter()
            iterator = iter(loader)
    return json.loads(json.dumps(loader.state_dict()))


def pixels(images: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """Back to 0-255 RGB, NCHW float32."""
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg.std).view(1, 3, 1, 1) * 255
    return images.float() * std + mean


def crop_geometry(images: torch.Tensor, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """(area fraction, flipped) of each crop, read from the red/green ramps."""
    rgb = pixels(images, cfg)
    size = rgb.shape[-1]
    a, b = 2, size - 3  # away from the borders, where resampling clamps the ramp
    red = rgb[:, 0].mean(dim=1)  # (N, W): the x ramp
    green = rgb[:, 1].mean(dim=2)  # (N, H): the y ramp
    width = (red[:, b] - red[:, a]) * size / (b - a) / 255
    height = (green[:, b] - green[:, a]) * size / (b - a) / 255
    return (width.abs() * height).numpy(), (width < 0).numpy()


def rewrite_shard(split_dir: Path, name: str, edit) -> None:
    """Rewrites shard NAME with edit(members) -> members (a dict name -> bytes), then its
    index and manifest entry, so that only the edited content is wrong."""
    tar_path = split_dir / name
    with tarfile.open(tar_path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members = edit(members)
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index_path = tar_path.with_suffix(".idx")
    index_path.write_text(_index_text(tar_path))
    manifest_path = split_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(e for e in manifest["shards"] if e["name"] == name)
    entry.update(bytes=tar_path.stat().st_size, sha256=file_sha256(tar_path),
                 index_sha256=file_sha256(index_path))
    manifest_path.write_text(json.dumps(manifest))


def _index_text(tar_path: Path) -> str:
    """DALI's wds2idx v1.2 format: one line per sample, 'ext offset size name' per file."""
    lines: dict[str, list[str]] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            lines.setdefault(key, []).append(f"{ext} {m.offset_data} {m.size} {m.name}")
    return f"v1.2 {len(lines)}\n" + "".join(" ".join(v) + "\n" for v in lines.values())
