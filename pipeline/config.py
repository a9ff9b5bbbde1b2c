"""The run's configuration: one typed tree of dataclass sections.

    cfg = load_config("configs/recipe.yaml", ["data.batch_size=192", "data.dtype=bfloat16"])
    loader = build_train_loader(cfg.data, rank, world_size, device)

Defaults and help live here; recipe YAMLs hold only their differences; dotted overrides
come last. OmegaConf checks the keys and types against these dataclasses (an unknown key
or a string for an int is an error) and `__post_init__` checks the values. Sections for
the model, optimizer and schedule join `Config` as the trainer lands.
"""

from __future__ import annotations

from dataclasses import MISSING as MISSING_FIELD
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = ("float32", "float16", "bfloat16")
BACKENDS = ("dali", "webdataset")


def _opt(default: Any, help_text: str) -> Any:
    """A field with its help text (shown by `describe`); lists and dicts are copied."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default),
                     metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class DataConfig:
    """The input pipeline: shards, augmentation, batching (pipeline/data, docs/data.md)."""

    shards: str = _opt(MISSING, "folder written by data_prep/shard.py (classes.json, train/, val/)")
    backend: str = _opt("dali", "'dali' (GPU decode) or 'webdataset' (CPU DataLoader fallback)")
    image_size: int = _opt(224, "training and validation crop size in pixels")
    val_resize_ratio: float = _opt(256 / 224, "val: shorter side = image_size * ratio, then "
                                   "center crop")
    crop_area: tuple[float, float] = _opt((0.08, 1.0), "random-resized-crop area fraction range")
    crop_aspect: tuple[float, float] = _opt((3 / 4, 4 / 3), "random-resized-crop aspect (w/h) "
                                            "range, sampled log-uniformly")
    flip_prob: float = _opt(0.5, "probability of a horizontal flip (0 disables it)")
    color_jitter: float = _opt(0.0, "brightness/contrast/saturation factors drawn from "
                               "[1-j, 1+j]; 0 disables")
    mean: tuple[float, float, float] = _opt(IMAGENET_MEAN, "per-channel RGB mean, 0-1 scale")
    std: tuple[float, float, float] = _opt(IMAGENET_STD, "per-channel RGB std, 0-1 scale")
    dtype: str = _opt("float32", "image dtype handed to the model: float32|float16|bfloat16")
    channels_last: bool = _opt(True, "images in NHWC memory (torch.channels_last), else NCHW")
    batch_size: int = _opt(128, "images per GPU per step (global batch = this x world size)")
    num_workers: int = _opt(4, "DALI CPU threads, or DataLoader processes for 'webdataset'")
    shuffle_buffer: int = _opt(4096, "samples in each reader's shuffle buffer (initial_fill)")
    shuffle_shards: bool = _opt(True, "re-order the train shards every epoch (same on all ranks)")
    prefetch: int = _opt(2, "batches prepared ahead (DALI prefetch_queue_depth, "
                         "DataLoader prefetch_factor)")
    hw_decoder_load: float = _opt(0.65, "share of JPEGs sent to the A100/H100 hardware "
                                  "decoder (GPU only)")
    seed: int = _opt(0, "run seed; readers and augmentations derive theirs from seed, rank "
                     "and epoch")
    return_keys: bool = _opt(False, "debug: keep each batch's sample keys in loader.last_keys")

    def __post_init__(self) -> None:
        _check(self.backend in BACKENDS, "data.backend", self.backend, f"one of {BACKENDS}")
        _check(self.dtype in DTYPES, "data.dtype", self.dtype, f"one of {DTYPES}")
        for name in ("image_size", "batch_size", "shuffle_buffer", "prefetch"):
            _check(getattr(self, name) >= 1, f"data.{name}", getattr(self, name), ">= 1")
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, ">= 0")
        _check(self.val_resize_ratio >= 1, "data.val_resize_ratio", self.val_resize_ratio, ">= 1")
        _check(_is_range(self.crop_area) and 0 < self.crop_area[0] and self.crop_area[1] <= 1,
               "data.crop_area", self.crop_area, "a range (lo, hi) with 0 < lo <= hi <= 1")
        _check(_is_range(self.crop_aspect) and self.crop_aspect[0] > 0, "data.crop_aspect",
               self.crop_aspect, "a range (lo, hi) with 0 < lo <= hi")
        _check(0 <= self.flip_prob <= 1, "data.flip_prob", self.flip_prob, "in [0, 1]")
        _check(0 <= self.color_jitter < 1, "data.color_jitter", self.color_jitter, "in [0, 1)")
        _check(len(self.mean) == 3 and len(self.std) == 3 and min(self.std) > 0,
               "data.mean/std", (self.mean, self.std), "three values each, std > 0")


@dataclass
class Config:
    """The whole run. Only the data section exists so far."""

    data: DataConfig = field(default_factory=DataConfig)


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the recipe YAML (differences only), then dotted overrides."""
    tree = OmegaConf.structured(Config)
    if recipe is not None:
        tree = OmegaConf.merge(tree, OmegaConf.load(recipe))
    tree = OmegaConf.merge(tree, OmegaConf.from_dotlist(list(overrides or [])))
    return OmegaConf.to_object(tree)


def to_yaml(cfg: Config) -> str:
    """The resolved tree, as written to the run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def describe(section: type) -> str:
    """One line per field: name, default and help (for --help texts and docs)."""
    lines = []
    for f in fields(section):
        default = f.default_factory() if f.default is MISSING_FIELD else f.default
        lines.append(f"{f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _is_range(value: tuple[float, float]) -> bool:
    return len(value) == 2 and value[0] <= value[1]


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} = {value!r}: expected {expected}")
