"""A network's weights without the training state: written by importers, read by evaluation.

    save_weights(out, state_dict, config={"model": {...}, "data": {...}}, source={...})
    saved = read_weights_folder(folder)     # WeightsError when it is not one, or damaged
    model.load_state_dict(saved.state); cfg = load_config(saved.config_file(), overrides)

A weights folder (what `python -m pipeline.models import-caffe-port` writes), sealed
like a checkpoint (pipeline/files.py seal):

    OUT/model.pt     the bare network's state dict, as `BNInception().state_dict()` keys it
                     (torch.load(..., weights_only=True) reads it)
    OUT/model.json   "format"; "config": the config sections the weights fix (model.* and
                     the input normalization data.mean/std), merged over the defaults
                     before the command line's overrides; "source": where they came from;
                     "files": model.pt's size and sha256, checked on reading

pipeline/training/scoring.py reads either this or a trainer checkpoint.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from pipeline.files import PARTIAL_DIR, check_sealed, read_index, seal

FORMAT = "bn-inception-weights/1"
MODEL, INFO = "model.pt", "model.json"


class WeightsError(ValueError):
    """A folder that is neither a weights folder nor a valid trainer checkpoint."""


@dataclass
class SavedWeights:
    state: dict[str, Tensor]  # the bare network's state dict
    config: dict[str, Any]  # the config tree (or the sections of it) the weights need
    kind: str  # "weights" | "trainer checkpoint"
    info: dict[str, Any] = field(default_factory=dict)  # model.json, for a weights folder

    def config_file(self) -> io.StringIO:
        """The config as a YAML recipe for pipeline.config.load_config."""
        return io.StringIO(yaml.safe_dump(self.config))


def save_weights(out: Path, state: dict[str, Tensor], config: dict[str, Any],
                 source: dict[str, Any]) -> Path:
    """Writes OUT/model.pt and OUT/model.json into OUT.partial, then renames it to OUT."""
    out = Path(out)
    if out.exists():
        raise WeightsError(f"{out} exists: remove it or choose another output folder")
    tmp = out.with_name(out.name + PARTIAL_DIR)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        torch.save(state, tmp / MODEL)
        seal(tmp, out, INFO, {"format": FORMAT, "config": config, "source": source})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder on a full disk
        raise
    return out


def is_weights_folder(folder: Path) -> bool:
    return (folder / INFO).is_file()


def read_weights_folder(folder: Path) -> SavedWeights:
    info = read_index(folder, INFO) or {}
    if info.get("format") != FORMAT:
        raise WeightsError(f"{folder / INFO}: format {info.get('format')!r}, expected {FORMAT!r}")
    problem = check_sealed(folder, INFO)
    if problem:
        raise WeightsError(f"{folder}: {problem}: copy the folder again or re-import it")
    state = torch.load(folder / MODEL, map_location="cpu", weights_only=True)
    return SavedWeights(state, info["config"], "weights", info)
