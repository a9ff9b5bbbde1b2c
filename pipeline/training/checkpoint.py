"""Checkpoints: a folder per step, written by every rank, made visible by one rename.

    checkpoints = Checkpointer(run_dir, cfg.checkpoint, env)
    folder = checkpoints.find_resume()          # newest valid one, or None
    if folder: trainer = checkpoints.read_trainer(folder); checkpoints.load(folder, engine, loader)
    checkpoints.save(engine, loader, state, extra, top1)   # collective: every rank calls it

runs/<name>/checkpoints/step-00001200/
    meta.json        written last: step, val top-1 (if evaluated), files' sizes and sha256
    engine.pt        DDP: model, optimizer, scaler (rank 0) | deepspeed/: DeepSpeed's save
    trainer.pt       TrainState (step, best top-1, W&B run id), resolved config, derived
    rank-00003.pt    per rank: the train loader's position (DALI reader state) and RNGs

Ranks write into `step-N.partial/`; after a barrier rank 0 syncs the files to disk,
hashes them into meta.json and renames the folder, so a crash at any moment leaves
either a complete checkpoint or a `.partial` folder that the next start deletes. A
checkpoint whose files no longer match meta.json is skipped on resume with a message.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipeline.config import CheckpointConfig
from pipeline.data import TrainLoader
from pipeline.dist.group import DistEnv
from pipeline.files import PARTIAL_DIR, check_sealed, read_index, seal
from pipeline.training.engines import Engine
from pipeline.training.engines.ddp import STATE_FILE
from pipeline.training.saving import save_torch, write_failure
from pipeline.training.state import TrainState

log = logging.getLogger(__name__)
META, TRAINER = "meta.json", "trainer.pt"
# DeepSpeed's save_checkpoint(folder, tag="deepspeed") (engines/deepspeed_engine.py TAG);
# with ZeRO 0-2 the parameters are whole on every rank, so rank 0's file holds them all.
DEEPSPEED_MODEL = Path("deepspeed") / "mp_rank_00_model_states.pt"


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, run_dir: Path, cfg: CheckpointConfig, env: DistEnv):
        self.dir, self.cfg, self.env = run_dir / "checkpoints", cfg, env
        if env.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob(f"*{PARTIAL_DIR}"):  # a save that a crash interrupted
                shutil.rmtree(stale)
        dist.barrier()

    def save(self, engine: Engine, loader: TrainLoader, state: TrainState,
             extra: dict[str, Any], top1: float | None = None) -> Path:
        """Collective. `extra` (config, derived values) goes into trainer.pt; `top1` is the
        val accuracy at this step, if it was evaluated (the best one is never pruned)."""
        final = self.dir / f"step-{state.step:08d}"
        tmp = final.with_name(final.name + PARTIAL_DIR)
        try:
            if self.env.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
            dist.barrier()
            engine.save(tmp)
            save_torch(tmp / f"rank-{self.env.rank:05d}.pt",
                       {"loader": loader.state_dict(), "rng": rng_state()})
            if self.env.is_main:
                save_torch(tmp / TRAINER, {"state": asdict(state), **extra})
            dist.barrier()
            if self.env.is_main:
                _publish(tmp, final, {"step": state.step, "top1": top1})
        except (OSError, RuntimeError) as err:
            if self.env.is_main:  # a half-written checkpoint on a full disk only takes space
                shutil.rmtree(tmp, ignore_errors=True)
            failure = write_failure(err, tmp)
            if failure is err:
                raise
            raise failure from err
        if self.env.is_main:
            prune(self.dir, self.cfg.keep_last)
        dist.barrier()
        return final

    def find_resume(self) -> Path | None:
        """The checkpoint to resume from (rank 0 decides, every rank gets its answer)."""
        choice = [None]
        if self.env.is_main and self.cfg.resume != "none":
            folder = self._choose()
            choice[0] = str(folder) if folder else None
        dist.broadcast_object_list(choice, src=0)
        return Path(choice[0]) if choice[0] else None

    def read_trainer(self, folder: Path) -> dict[str, Any]:
        """trainer.pt: the TrainState, the config and the derived values it was saved with."""
        return torch.load(folder / TRAINER, map_location="cpu", weights_only=False)

    def load(self, folder: Path, engine: Engine, loader: TrainLoader,
             restart_epoch: int | None = None) -> None:
        """Restores the engine, this rank's loader position and RNGs; with `restart_epoch`
        the loader goes to that epoch's start instead (the run's shape changed)."""
        try:
            engine.load(folder)
        except RuntimeError as err:  # load_state_dict's mismatch: keys and shapes
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"{folder} does not fit this model ({first}): it was "
                                  "saved with other model.* settings; start a new run "
                                  "with another name=, or resume a matching checkpoint") from err
        own = folder / f"rank-{self.env.rank:05d}.pt"
        ranks = own if own.is_file() else folder / "rank-00000.pt"  # the world size changed
        saved = torch.load(ranks, map_location="cpu", weights_only=False)
        if restart_epoch is None:
            loader.load_state_dict(saved["loader"])  # another rank's: skip, or a clear error
        else:
            loader.set_epoch(restart_epoch)
        if ranks == own:
            set_rng_state(saved["rng"], self.env.device)

    def set_aside(self, label: str) -> Path:
        """Collective: moves every checkpoint into checkpoints/<label>/, where resume and
        pruning no longer see them (their steps count another run shape's)."""
        folder = self.dir / label
        dist.barrier()  # every rank has read what it resumes from
        if self.env.is_main:
            folder.mkdir(exist_ok=True)
            for old in self.dir.glob("step-*[0-9]"):
                os.replace(old, folder / old.name)
        dist.barrier()
        return folder

    def _choose(self) -> Path | None:
        if self.cfg.resume != "auto":
            folder = Path(self.cfg.resume)
            problem = validate(folder)
            if problem:
                raise CheckpointError(f"checkpoint.resume = {folder}: {problem}")
            return folder
        problems = []
        for folder in sorted(self.dir.glob("step-*[0-9]"), reverse=True):
            problem = validate(folder)
            if problem is None:
                if problems:
                    log.warning("resuming from %s, the newest valid checkpoint", folder.name)
                return folder
            log.warning("checkpoint %s is damaged (%s); trying the previous one", folder, problem)
            problems.append(f"{folder.name}: {problem}")
        if problems:
            raise CheckpointError(f"every checkpoint in {self.dir} is damaged: "
                                  f"{'; '.join(problems)}. Move them away to start afresh.")
        return None


def prune(folder: Path, keep_last: int) -> list[Path]:
    """Deletes all but the newest `keep_last` checkpoints and the best one (by val top-1
    in meta.json); returns what it kept."""
    done = sorted(folder.glob("step-*[0-9]"))
    scores = {f: (_read_meta(f) or {}).get("top1") for f in done}
    best = max((f for f in done if scores[f] is not None), key=scores.get, default=None)
    for old in done[:-keep_last]:
        if old != best:
            shutil.rmtree(old)
    return [f for f in done if f.exists()]


def validate(folder: Path) -> str | None:
    """None when every file listed in meta.json is there with its size and sha256."""
    return check_sealed(folder, META)


def is_checkpoint(folder: Path) -> bool:
    return (folder / TRAINER).is_file() or (folder / META).is_file()


def network_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """A valid checkpoint's bare network state dict (DDP's or DeepSpeed's save) and the
    config YAML it was saved with; CheckpointError naming what is wrong."""
    problem = validate(folder)
    if problem:
        raise CheckpointError(f"checkpoint {folder}: {problem}")
    config = torch.load(folder / TRAINER, map_location="cpu", weights_only=False)["config"]
    if (folder / STATE_FILE).is_file():
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)["model"]
    elif (folder / DEEPSPEED_MODEL).is_file():
        state = torch.load(folder / DEEPSPEED_MODEL, map_location="cpu",
                           weights_only=False)["module"]
    else:
        raise CheckpointError(f"checkpoint {folder}: neither {STATE_FILE} (DDP) nor "
                              f"{DEEPSPEED_MODEL} (DeepSpeed) is there")
    return state, config


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _publish(tmp: Path, final: Path, meta: dict[str, Any]) -> None:
    """Sync every file, hash it into meta.json, then rename: the checkpoint exists."""
    seal(tmp, final, META, meta)


def _read_meta(folder: Path) -> dict | None:
    return read_index(folder, META)
