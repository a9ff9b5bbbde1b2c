"""Resuming a run whose shape changed (another world size, per-GPU batch or accumulation)
or whose shards did (another cut or copy of the data: shards_identity differs).

    point = resume_point(trainer["derived"], trainer["state"], run)   # before loading

The saved step counts optimizer steps of the old shape; it is carried over through the
epochs done, so the schedule (a function of the step against the new total) and the
number of epochs trained stay right. A checkpoint at an epoch boundary resumes exactly
there; one taken inside an epoch restarts that epoch from its beginning in the new shape
(the weights keep what its first steps learned; the loader's position in it cannot be
carried across a new data cut). DeepSpeed's checkpoint is partitioned by rank, so a
DeepSpeed run resumes on its own world size only. New shards keep the step but not the
loader's position, which names the old shards: the epoch restarts from its beginning.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.resolve import Derived
from pipeline.training.checkpoint import CheckpointError


class ReshapeError(CheckpointError):
    """A checkpoint that cannot be resumed in this run's shape; the message says what to do."""


@dataclass(frozen=True)
class ResumePoint:
    step: int
    validated_step: int
    restart_epoch: int | None  # the loader goes to this epoch's start (None: the saved spot)
    note: str | None  # what changed and what happens to the current epoch, for the log
    reshaped: bool = False  # the steps count another shape: the old checkpoints go aside


def resume_point(saved: dict, state: dict, run: Derived, shards_changed: bool = False
                 ) -> ResumePoint:
    step, validated = state["step"], state.get("validated_step", 0)
    old = (saved["world_size"], saved["global_batch"], saved["steps_per_epoch"])
    new = (run.world_size, run.global_batch, run.steps_per_epoch)
    saved_engine = saved.get("engine", {}).get("name", run.engine.name)
    if saved_engine != run.engine.name:
        raise ReshapeError(f"the checkpoint was written by dist.engine = {saved_engine}; "
                           f"resume with dist.engine={saved_engine}, or start a new run")
    if old == new:
        return _same_shape(step, validated, run, shards_changed)
    if run.engine.name == "deepspeed" and old[0] != new[0]:
        raise ReshapeError(f"the DeepSpeed checkpoint was written by {old[0]} ranks and is "
                           f"partitioned by rank; resume on {old[0]} ranks (the same "
                           "dist.engine and data.batch_size), or start a new run")
    epoch, into = divmod(step, old[2])
    new_step = epoch * run.steps_per_epoch
    shape = (f"the run's shape changed (world {old[0]} -> {new[0]}, global batch {old[1]} -> "
             f"{new[1]}, {old[2]} -> {new[2]} steps per epoch)")
    what = (f"epoch {epoch} was {into} of {old[2]} steps in and restarts from its beginning"
            if into else f"resuming at the start of epoch {epoch}")
    return ResumePoint(new_step, round(validated * run.steps_per_epoch / old[2]), epoch,
                       f"{shape}: {what}, at step {new_step} of {run.total_steps}", True)


def _same_shape(step: int, validated: int, run: Derived, shards_changed: bool) -> ResumePoint:
    if not shards_changed:
        return ResumePoint(step, validated, None, None)
    epoch, into = divmod(step, run.steps_per_epoch)
    what = (f"epoch {epoch} was {into} of {run.steps_per_epoch} steps in and restarts from "
            "its beginning" if into else f"resuming at the start of epoch {epoch}")
    return ResumePoint(epoch * run.steps_per_epoch, validated, epoch,
                       "the shards differ from the checkpoint's (another cut or copy of the "
                       f"data: data.shards): {what}, at step {epoch * run.steps_per_epoch}")
