"""A network's weights without the training state: written by importers, read by evaluation.

    save_weights(out, state_dict, config={"model": {...}, "data": {...}}, source={...})
    saved = read_weights(folder)     # a weights folder, or a trainer checkpoint step-N/
    model.load_state_dict(saved.state); cfg = load_config(saved.config_file(), overrides)

A weights folder (what `python -m pipeline.models import-caffe-port` writes):

    OUT/model.pt     the bare network's state dict, as `BNInception().state_dict()` keys it
                     (torch.load(..., weights_only=True) reads it)
    OUT/model.json   "format"; "config": the config sections the weights fix (model.* and
                     the input normalization data.mean/std), merged over the defaults
                     before the command line's overrides; "source": where they came from;
                     "files": model.pt's size and sha256, checked on reading

A trainer checkpoint (runs/NAME/checkpoints/step-N, pipeline/training/checkpoint.py) gives
its model from engine.pt (DDP) or DeepSpeed's model states, and the whole config it was
saved with.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from pipeline.files import file_sha256, fsync_path
from pipeline.training.checkpoint import TRAINER, validate
from pipeline.training.engines.ddp import STATE_FILE
from pipeline.training.saving import save_torch

FORMAT = "bn-inception-weights/1"
MODEL, INFO = "model.pt", "model.json"
# DeepSpeed's save_checkpoint(folder, tag="deepspeed") (engines/deepspeed_engine.py TAG);
# with ZeRO 0-2 the parameters are whole on every rank, so rank 0's file holds them all.
DEEPSPEED_MODEL = Path("deepspeed") / "mp_rank_00_model_states.pt"


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
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_torch(tmp / MODEL, state)
        info = {"format": FORMAT, "config": config, "source": source,
                "files": {MODEL: [(tmp / MODEL).stat().st_size, file_sha256(tmp / MODEL)]}}
        with open(tmp / INFO, "w") as f:
            f.write(json.dumps(info, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder on a full disk
        raise
    os.replace(tmp, out)
    fsync_path(out.parent)
    return out


def read_weights(folder: str | Path) -> SavedWeights:
    """The network's weights and the config they need, from either kind of folder."""
    folder = Path(folder)
    if (folder / INFO).is_file():
        return _read_weights_folder(folder)
    if (folder / TRAINER).is_file() or (folder / "meta.json").is_file():
        return _read_trainer_checkpoint(folder)
    what = "no such folder" if not folder.exists() else f"neither {INFO} nor {TRAINER} is there"
    raise WeightsError(f"{folder}: {what}; give a folder written by `python -m pipeline.models "
                       "import-caffe-port` or a trainer checkpoint runs/NAME/checkpoints/step-N")


def _read_weights_folder(folder: Path) -> SavedWeights:
    info = json.loads((folder / INFO).read_text())
    if info.get("format") != FORMAT:
        raise WeightsError(f"{folder / INFO}: format {info.get('format')!r}, expected {FORMAT!r}")
    size, digest = info["files"][MODEL]
    path = folder / MODEL
    if not path.is_file() or path.stat().st_size != size or file_sha256(path) != digest:
        raise WeightsError(f"{path} is missing or does not match the size and sha256 in "
                           f"{INFO}: copy the folder again or re-import it")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return SavedWeights(state, info["config"], "weights", info)


def _read_trainer_checkpoint(folder: Path) -> SavedWeights:
    problem = validate(folder)
    if problem:
        raise WeightsError(f"checkpoint {folder}: {problem}")
    trainer = torch.load(folder / TRAINER, map_location="cpu", weights_only=False)
    if (folder / STATE_FILE).is_file():
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)["model"]
    elif (folder / DEEPSPEED_MODEL).is_file():
        state = torch.load(folder / DEEPSPEED_MODEL, map_location="cpu",
                           weights_only=False)["module"]
    else:
        raise WeightsError(f"checkpoint {folder}: neither {STATE_FILE} (DDP) nor "
                           f"{DEEPSPEED_MODEL} (DeepSpeed) is there")
    return SavedWeights(state, yaml.safe_load(trainer["config"]), "trainer checkpoint")
