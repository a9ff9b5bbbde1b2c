"""Runs the planned shards: local worker processes, or a SLURM array job via submitit.

Each worker takes whole shards. A shard whose record exists, matches the plan and
whose files match their checksums is kept as it is; any other shard is (re)written.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from data_prep.imagenet import SourceError
from data_prep.images import EncodeOptions
from data_prep.shard_writer import ShardSpec, record_path, write_shard
from pipeline.files import file_sha256


@dataclass(frozen=True)
class SlurmOptions:
    tasks: int = 8
    cpus_per_task: int = 8
    partition: str | None = None
    time_min: int = 240
    mem_gb: int = 32


def ensure_shard(spec: ShardSpec, out_dir: Path, options: EncodeOptions) -> dict:
    """The shard's record: the finished one if it checks out, else a newly written one."""
    record = _finished_record(spec, out_dir, options)
    if record is not None:
        return {**record, "reused": True}
    return {**write_shard(spec, out_dir, options), "reused": False}


class LocalRunner:
    """Writes whole shards on this machine's worker processes (in-process for one).

    The pool starts on entry, so its interpreters import while the source is listed.
    """

    def __init__(self, workers: int):
        self.workers, self.pool = workers, None

    def __enter__(self):
        if self.workers > 1:
            self.pool = worker_pool(self.workers)
        return self

    def __exit__(self, *_):
        if self.pool is not None:
            self.pool.terminate()

    def run(self, specs: list[ShardSpec], out_dir: Path, options: EncodeOptions,
            on_done: Callable[[ShardSpec, dict], None]) -> list[dict]:
        jobs = [(s, out_dir, options) for s in specs]
        results = self.pool.imap_unordered(_ensure_task, jobs) if self.pool else map(
            _ensure_task, jobs)
        records = []
        for spec, record in results:
            on_done(spec, record)
            records.append(record)
        return records


class SlurmRunner:
    """Writes shards in a SLURM array job: shard i goes to task i mod tasks."""

    def __init__(self, slurm: SlurmOptions):
        self.slurm = slurm

    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass

    def run(self, specs: list[ShardSpec], out_dir: Path, options: EncodeOptions,
            on_done: Callable[[ShardSpec, dict], None]) -> list[dict]:
        import submitit

        slurm = self.slurm
        executor = submitit.AutoExecutor(folder=out_dir.parent / "slurm_logs" / "%j")
        executor.update_parameters(
            name=f"shard-{out_dir.name}", timeout_min=slurm.time_min, nodes=1,
            tasks_per_node=1, cpus_per_task=slurm.cpus_per_task, mem_gb=slurm.mem_gb,
            slurm_array_parallelism=slurm.tasks,
            **({"slurm_partition": slurm.partition} if slurm.partition else {}),
        )
        groups = [specs[i::slurm.tasks] for i in range(min(slurm.tasks, len(specs)))]
        n = len(groups)
        jobs = executor.map_array(write_shard_set, groups, [out_dir] * n, [options] * n,
                                  [slurm.cpus_per_task] * n)
        print(f"submitted SLURM array job {jobs[0].job_id.split('_')[0]} ({n} tasks); "
              f"logs in {out_dir.parent / 'slurm_logs'}", flush=True)
        _follow_records(specs, out_dir, jobs, on_done)
        return [record for job in jobs for record in job.result()]


def write_shard_set(specs: list[ShardSpec], out_dir: Path, options: EncodeOptions,
                    workers: int) -> list[dict]:
    """The body of one SLURM array task."""
    with LocalRunner(workers) as runner:
        return runner.run(specs, out_dir, options, lambda spec, record: None)


def _follow_records(specs, out_dir: Path, jobs, on_done) -> None:
    """Reports shards as their records appear, until every array task has ended."""
    waiting = {s.name: s for s in specs}
    while True:
        finished = all(job.done() for job in jobs)
        for name in [n for n in waiting if record_path(out_dir, n).is_file()]:
            on_done(waiting.pop(name), json.loads(record_path(out_dir, name).read_text()))
        if finished:
            return
        time.sleep(2)


def worker_pool(workers: int):
    """Fresh interpreters (no inherited threads or locks) that die with this process."""
    return multiprocessing.get_context("spawn").Pool(workers, initializer=_die_with_parent)


def _die_with_parent() -> None:
    # Without this a SIGKILLed run leaves its workers blocked on the task queue forever.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: orphans end when their queue closes


def _ensure_task(job):
    spec, out_dir, options = job
    return spec, ensure_shard(spec, out_dir, options)


def _finished_record(spec: ShardSpec, out_dir: Path, options: EncodeOptions) -> dict | None:
    path = record_path(out_dir, spec.name)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("plan_digest") != spec.digest(options):
        raise SourceError(
            f"{out_dir / record['name']} was written from other inputs or arguments; "
            "write to a new --out folder, or delete the old shards first"
        )
    tar_ok = file_sha256(out_dir / record["name"]) == record["sha256"]
    idx_ok = file_sha256(out_dir / record["index"]) == record["index_sha256"]
    return record if tar_ok and idx_ok else None
