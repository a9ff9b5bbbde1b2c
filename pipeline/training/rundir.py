"""The run folder and the logs: runs/<name>/ with config.yaml, derived.json, logs/.

Every rank logs to logs/rank-NNNNN.log; rank 0 also to the console (other ranks only
their warnings), so a 64-GPU job prints one stream and keeps 64 full records.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pipeline.dist.group import DistEnv
from pipeline.resolve import Derived

log = logging.getLogger("pipeline")
FORMAT = "%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"
TRACE = "pipeline.trace"  # what goes to a rank's log file only (failures.py)


def prepare_run_dir(run_dir: Path, env: DistEnv) -> Path:
    """The folder made and this rank's log file open."""
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir / "logs" / f"rank-{env.rank:05d}.log", env)
    launch = env.launch
    log.info("run folder %s; %s launch, rank %d of %d, local rank %d, device %s, %s",
             run_dir, launch.launcher, env.rank, env.world_size, env.local_rank,
             env.device, env.backend)
    if launch.job_id is not None:
        log.info("SLURM job %s, restart %d; master %s:%d", launch.job_id,
                 launch.restart_count, launch.master_addr, launch.master_port)
    return run_dir


def record_config(run_dir: Path, config_yaml: str, env: DistEnv) -> None:
    """The resolved config in config.yaml (rank 0), once this start was allowed."""
    if env.is_main:
        _write_config(run_dir / "config.yaml", config_yaml)


def record_derived(run_dir: Path, run: Derived, env: DistEnv) -> None:
    log.info("derived: %s", run.describe())
    for warning in run.warnings:
        log.warning("%s", warning)
    if env.is_main:
        (run_dir / "derived.json").write_text(json.dumps(run.as_dict(), indent=1) + "\n")


def _write_config(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() != text:
        previous = path.with_name("config.previous.yaml")
        path.replace(previous)
        log.warning("the config differs from the last start of this run (kept as %s)",
                    previous.name)
    path.write_text(text)


def close_logging() -> None:
    """Closes the handlers a training installed (a caller may train again in-process)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "run_log", False)]:
        root.removeHandler(handler)
        handler.close()


def _setup_logging(path: Path, env: DistEnv) -> None:
    close_logging()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter(FORMAT.format(rank=env.rank))
    to_file = logging.FileHandler(path)
    to_file.setFormatter(formatter)
    console = logging.StreamHandler(sys.stdout if env.is_main else sys.stderr)
    console.setFormatter(formatter)
    console.setLevel(logging.INFO if env.is_main else logging.WARNING)
    console.addFilter(lambda record: record.name != TRACE)  # tracebacks: the file only
    for handler in (to_file, console):
        handler.run_log = True
        root.addHandler(handler)
