"""The run folder and the logs: runs/<name>/ with config.yaml, derived.json, logs/.

Every rank logs to logs/rank-NNNNN.log; rank 0 also to the console (other ranks only
their warnings), so a 64-GPU job prints one stream and keeps 64 full records.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from pipeline.launch.distributed import DistEnv
from pipeline.resolve import Derived

log = logging.getLogger("pipeline")
FORMAT = "%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"


def prepare_run_dir(run_dir: Path, config_yaml: str, env: DistEnv) -> Path:
    """The folder made, this rank's log file open, the resolved config written (rank 0)."""
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir / "logs" / f"rank-{env.rank:05d}.log", env)
    if env.is_main:
        _write_config(run_dir / "config.yaml", config_yaml)
    launch = env.launch
    log.info("run folder %s; %s launch, rank %d of %d, local rank %d, device %s, %s",
             run_dir, launch.launcher, env.rank, env.world_size, env.local_rank,
             env.device, env.backend)
    if launch.job_id is not None:
        log.info("SLURM job %s, restart %d; master %s:%d", launch.job_id,
                 launch.restart_count, launch.master_addr, launch.master_port)
    return run_dir


def record_derived(run_dir: Path, run: Derived, env: DistEnv) -> None:
    log.info("derived: %s", run.describe())
    if env.is_main:
        (run_dir / "derived.json").write_text(json.dumps(run.as_dict(), indent=1) + "\n")


def _write_config(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() != text:
        previous = path.with_name("config.previous.yaml")
        path.replace(previous)
        log.warning("the config differs from the last start of this run (kept as %s)",
                    previous.name)
    path.write_text(text)


def _setup_logging(path: Path, env: DistEnv) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    formatter = logging.Formatter(FORMAT.format(rank=env.rank))
    to_file = logging.FileHandler(path)
    to_file.setFormatter(formatter)
    console = logging.StreamHandler(sys.stdout if env.is_main else sys.stderr)
    console.setFormatter(formatter)
    console.setLevel(logging.INFO if env.is_main else logging.WARNING)
    root.addHandler(to_file)
    root.addHandler(console)
