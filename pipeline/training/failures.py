"""How a failed training process says why: one line when the cause is known, the traceback
in the rank's log file, and "another rank died first" only where a collective failed.

    except Exception as err:
        report_failure(err, env, run_dir)

A start-up error (no shards at data.shards, a batch larger than the data, a full disk, a
checkpoint of another model) is the user's to fix, and a traceback on 64 consoles hides
the one line that says how.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch.distributed as dist

from pipeline.data import ShardError
from pipeline.dist.group import RendezvousError
from pipeline.files import describe_os_error
from pipeline.training.checkpoint import CheckpointError
from pipeline.training.preemption import NonFiniteLoss
from pipeline.training.rundir import TRACE
from pipeline.training.runlock import RunLocked

log = logging.getLogger("pipeline.train")
# Errors whose messages name the key or file and what to do. ValueError: the config and
# data checks (a batch the data cannot fill, num_classes against classes.json, a resume
# into a run of another config).
EXPLAINED = (NonFiniteLoss, ShardError, CheckpointError, RunLocked, RendezvousError,
             ValueError)
COLLECTIVE_MARKS = ("gloo", "NCCL", "ProcessGroup", "Connection reset", "Connection closed")


def explain(err: BaseException) -> str | None:
    """The one line that says what went wrong and what to do, or None when unexpected."""
    if isinstance(err, OSError) and err.filename is not None:
        return describe_os_error(err)
    if isinstance(err, EXPLAINED):
        return f"{type(err).__name__}: {err}"
    return None


def is_collective_failure(err: BaseException) -> bool:
    return isinstance(err, dist.DistError) or any(m in str(err) for m in COLLECTIVE_MARKS)


def report_failure(err: BaseException, rank: int, world_size: int, run_dir: Path) -> None:
    line = explain(err)
    collective = line is None and world_size > 1 and is_collective_failure(err)
    if (line or collective) and logging.getLogger().handlers:  # the rank's log file is open
        logging.getLogger(TRACE).error("rank %d failed", rank, exc_info=err)
    if line is not None:
        log.error("%s", line)
    elif collective:
        log.error("rank %d: a collective failed (%s); that usually means another rank died "
                  "first: see every rank's log in %s", rank,
                  str(err).strip().splitlines()[0][:300], run_dir / "logs")
    else:
        log.error("rank %d failed: an unexpected error (the traceback follows; it is also "
                  "in %s)", rank, run_dir / "logs", exc_info=err)
