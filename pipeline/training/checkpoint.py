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

Which one a start resumes: the newest (checkpoint.resume=auto); after a change of shape,
the old shape's go to checkpoints/world<W>-batch<B>/ just before the new shape's first
save; a start from an older step or from scratch (resume=PATH or none) branches off, its
newer checkpoints going to checkpoints/abandoned-<time>/ and branch.json recording the
choice, so that restarts follow the branch (docs/training.md).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipeline.config import CheckpointConfig
from pipeline.data import TrainLoader
from pipeline.dist.group import DistEnv
from pipeline.files import (
    PARTIAL_DIR,
    check_sealed,
    fsync_path,
    read_index,
    seal,
    write_json_atomic,
)
from pipeline.training.engines import Engine
from pipeline.training.engines.ddp import STATE_FILE
from pipeline.training.saving import save_torch, write_failure
from pipeline.training.state import TrainState

log = logging.getLogger(__name__)
META, TRAINER = "meta.json", "trainer.pt"
BRANCH = "branch.json"  # the last start that did not resume the newest checkpoint
# DeepSpeed's save_checkpoint(folder, tag="deepspeed") (engines/deepspeed_engine.py TAG);
# with ZeRO 0-2 the parameters are whole on every rank, so rank 0's file holds them all.
DEEPSPEED_MODEL = Path("deepspeed") / "mp_rank_00_model_states.pt"


class CheckpointError(RuntimeError):
    pass


class Checkpointer:
    def __init__(self, run_dir: Path, cfg: CheckpointConfig, env: DistEnv):
        self.dir, self.cfg, self.env = run_dir / "checkpoints", cfg, env
        self.aside_label: str | None = None  # set_aside_at_next_save's
        self.chosen: tuple[Path | None] | None = None  # find_resume's answer, once made
        if env.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob(f"*{PARTIAL_DIR}"):  # a save that a crash interrupted
                shutil.rmtree(stale)
        dist.barrier()

    def save(self, engine: Engine, loader: TrainLoader, state: TrainState,
             extra: dict[str, Any], top1: float | None = None) -> Path:
        """Collective. `extra` (config, derived values) goes into trainer.pt; `top1` is the
        val accuracy at this step, if it was evaluated (the best one is never pruned)."""
        if self.aside_label:
            kept = self.set_aside(self.aside_label)
            log.warning("the checkpoints of the run's earlier shape are kept in %s", kept)
            self.aside_label = None
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
        """The checkpoint to resume from (rank 0 decides, every rank gets its answer; asked
        again, the same answer: a branch is set aside once)."""
        if self.chosen is None:
            choice = [None]
            if self.env.is_main:
                folder = self._choose()
                choice[0] = str(folder) if folder else None
            dist.broadcast_object_list(choice, src=0)
            self.chosen = (Path(choice[0]) if choice[0] else None,)
        return self.chosen[0]

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

    def set_aside_at_next_save(self, label: str) -> None:
        """The run's shape changed: its checkpoints' steps count another shape and would sort
        after the new ones. They go into checkpoints/<label>/ just before the new shape's
        first save, not at the resume: a start that dies before saving (an OOM at step 1,
        a NaN from the scaled-up lr) leaves them where the next start resumes from."""
        self.aside_label = label

    def set_aside(self, label: str) -> Path:
        """Collective: moves every checkpoint into checkpoints/<label>/ (label-2, ... when an
        earlier change of shape used that name), where resume and pruning no longer see
        them, except as the fallback when no checkpoint is left outside (_choose)."""
        folder = self.dir / label
        for n in range(2, 1000):
            if not folder.exists():
                break
            folder = self.dir / f"{label}-{n}"
        dist.barrier()  # every rank has read what it resumes from
        olds = sorted(self.dir.glob("step-*[0-9]"))
        if self.env.is_main and olds:  # none when the resume came from an earlier set-aside
            folder.mkdir()
            for old in olds:
                os.replace(old, folder / old.name)
            fsync_path(self.dir)
        dist.barrier()
        return folder

    def _choose(self) -> Path | None:
        if self.cfg.resume == "auto":
            return self._newest()
        branch = read_index(self.dir, BRANCH) or {}
        if branch.get("resume") == self.cfg.resume and self._saved_since(branch["time"]):
            # the branch this start names was taken and has saved since: continue it (a
            # requeue repeats the job's command line; it must not go back to the start)
            folder = self._newest()
            log.warning("checkpoint.resume = %s was taken at %s; continuing that branch from "
                        "its newest checkpoint %s", self.cfg.resume,
                        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(branch["time"])),
                        folder and folder.name)
            return folder
        folder = None
        if self.cfg.resume != "none":
            folder = Path(self.cfg.resume)
            problem = validate(folder)
            if problem:
                raise CheckpointError(f"checkpoint.resume = {folder}: {problem}")
        self._branch(folder)
        return folder

    def _newest(self) -> Path | None:
        problems = []
        for folder in self._candidates():
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

    def _branch(self, start: Path | None) -> None:
        """A start from `start` (None: from scratch) rather than from the newest checkpoint:
        the run's checkpoints that are not on the way to `start` move to
        checkpoints/abandoned-<time>/, so that restarts, pruning and the metrics follow the
        branch chosen; BRANCH records the choice for the next starts."""
        inside = start is not None and start.resolve().parent == self.dir.resolve()
        keep = _step(start) if inside else -1
        newer = [f for f in sorted(self.dir.glob("step-*[0-9]")) if _step(f) > keep]
        if newer:
            folder = self.dir / f"abandoned-{time.strftime('%Y%m%d-%H%M%S')}"
            folder.mkdir()
            for old in newer:
                os.replace(old, folder / old.name)
            fsync_path(self.dir)
            log.warning("checkpoint.resume = %s: this start branches off; the run's %d newer "
                        "checkpoints (%s) are kept in %s", self.cfg.resume, len(newer),
                        ", ".join(f.name for f in newer), folder)
        write_json_atomic(self.dir / BRANCH, {"resume": self.cfg.resume, "time": time.time()})

    def _saved_since(self, when: float) -> bool:
        return any(_saved_at(f) > when for f in self.dir.glob("step-*[0-9]"))

    def _candidates(self) -> list[Path]:
        """Newest first: the run's current checkpoints by step; when there are none, those set
        aside at a change of shape (a start that died between setting them aside and its
        first save), by when they were saved."""
        current = sorted(self.dir.glob("step-*[0-9]"), reverse=True)
        if current:
            return current
        aside = [f for f in self.dir.glob("world*-batch*/step-*[0-9]") if f.is_dir()]
        return sorted(aside, key=_saved_at, reverse=True)


def _step(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def _saved_at(folder: Path) -> float:
    try:
        return (folder / META).stat().st_mtime
    except OSError:
        return 0.0


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
