"""Writing a torch object to a file so that a full disk is an OSError that names the file.

    save_torch(folder / "engine.pt", state)     # flushed and synced
    raise write_failure(err, folder)            # OSError(ENOSPC, ..., folder) or err

torch.save to a path reports a full disk as "unexpected pos 576 vs 534"; given a Python
file, the OSError that caused it survives as the error's context.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch

NEARLY_FULL = 64 << 20  # bytes free below which a vague write error is a full disk


def save_torch(path: Path, obj: Any) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def write_failure(err: BaseException, where: Path) -> BaseException:
    """An OSError naming `where` for a write that failed for lack of space or rights (found
    in the error's chain, or a vague error on a nearly full disk); else `err` itself."""
    cause: BaseException | None = err
    while cause is not None and not (isinstance(cause, OSError) and cause.errno):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return OSError(cause.errno, os.strerror(cause.errno), str(where))
    try:
        full = shutil.disk_usage(where if where.exists() else where.parent).free < NEARLY_FULL
    except OSError:
        full = False
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where)) if full else err
