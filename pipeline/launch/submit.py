"""The submitit launcher: the same training as slurm/train_64gpu.sh, submitted from Python.

    status = submit_training(args)          # python -m pipeline.launch's arguments
    cfg, overrides, tasks = checked_request(args)   # LaunchError before anything is submitted
    job = submit(args, cfg, overrides, tasks); status = follow(job)   # through its requeues

One task per GPU under srun (`--kill-on-bad-exit`), USR2 300 s before the time limit, the
job requeueable, logs appended across requeues, SRUN_CPUS_PER_TASK exported: what the
job script does. Preemption stays collective: the trainer's handlers replace submitit's
(which would checkpoint on rank 0 alone and exit inside the handler), every rank saves,
rank 0 requeues with `scontrol requeue` and the tasks leave without a result, so the job
comes back and resumes; submitit's own cap of 3 timeouts is raised to dist.max_requeues.
The command line is pipeline/launch/__main__.py's.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

from pipeline.config import Config, load_config
from pipeline.dist.jobstate import TERMINAL, job_state

ENVIRONMENT = [  # the job script's exports (slurm/train_64gpu.sh says why)
    "export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}",
    "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}",
    "export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}",
    "export NCCL_DEBUG=${NCCL_DEBUG:-WARN}",
    'if [ -n "${CLUSTER_ENV:-}" ]; then source "$CLUSTER_ENV"; fi',
]


class LaunchError(ValueError):
    """A request that cannot run, found before anything is submitted."""


@dataclass(frozen=True)
class TrainingJob:
    """What every task of the job runs: the trainer, in-process."""

    config: str
    overrides: tuple[str, ...]

    def __call__(self) -> dict:
        from pipeline.training.process import train_process

        outcome = train_process(self.config, list(self.overrides))
        if outcome.status == 0:
            return {"status": 0, **outcome.summary()}
        if outcome.requeued:  # leave without a result: the job comes back and resumes
            raise SystemExit(outcome.status)
        raise RuntimeError(f"training ended {outcome.ending} (status {outcome.status})"
                           f"{' after a preemption, not requeued' if outcome.preempted else ''}"
                           f"; see {outcome.run_dir}/logs")

    def checkpoint(self, *args, **kwargs):
        """Only reached if SLURM's signal beats the trainer's handlers at start-up: the job
        is requeued as it is and resumes from its newest checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def minutes(text: str) -> int:
    """sbatch's --time forms (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes, rounded
    up; a LaunchError for anything else, and for no limit at all."""
    value = text.strip()
    if value.upper() in ("UNLIMITED", "INFINITE", "-1"):
        raise LaunchError(f"--time {text}: give the job a time limit (at most the partition's, "
                          "`sinfo -o '%P %l'`): SLURM's warning --signal-s before the limit is "
                          "what makes the run save and requeue itself")
    form = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if form is None:
        raise LaunchError(f"--time {text}: expected minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S "
                          "(sbatch's forms)")
    days, first, second, third = (int(v) if v else None for v in form.groups())
    if days is not None:
        hours, mins, secs = first, second or 0, third or 0
    elif third is not None:
        hours, mins, secs = first, second, third
    else:
        hours, mins, secs = 0, first, second or 0
    total = (days or 0) * 1440 + hours * 60 + mins + (secs > 0)
    if total < 1:
        raise LaunchError(f"--time {text}: a time limit of at least a minute")
    return total


def checked_request(args: argparse.Namespace) -> tuple[Config, list[str], int]:
    """The config with a run name, the trainer's overrides and the tasks per node; a
    LaunchError names what would fail before anything is submitted."""
    if not Path(args.config).is_file():
        raise LaunchError(f"config {args.config} not found (from {Path.cwd()})")
    minutes(args.time)
    tasks = args.tasks_per_node or max(1, args.gpus_per_node)
    if args.gpus_per_node and tasks > args.gpus_per_node:
        raise LaunchError(f"--tasks-per-node {tasks} exceeds --gpus-per-node "
                          f"{args.gpus_per_node}: one task per GPU")
    overrides = list(args.overrides)
    if not any(o.startswith("name=") for o in overrides):
        overrides.append(f"name={Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        cfg = load_config(args.config, overrides)
    except (ValueError, OmegaConfBaseException, OSError) as err:  # names the key
        raise LaunchError(f"config error: {err}") from None
    if args.partition:
        shown = subprocess.run(["scontrol", "show", "partition", args.partition],
                               capture_output=True, text=True)
        if shown.returncode != 0:
            raise LaunchError(f"partition {args.partition!r} does not exist on this cluster "
                              f"(scontrol: {shown.stderr.strip() or shown.stdout.strip()}); "
                              "`sinfo -s` lists them")
    return cfg, overrides, tasks


def submit(args: argparse.Namespace, cfg: Config, overrides: list[str], tasks: int):
    import submitit

    folder = args.folder or cfg.run_dir / "submitit"
    # Our trainer requeues, not submitit; its cap (3 by default) must still not end a run
    # whose own handler ever runs (a signal during start-up).
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                     slurm_max_num_timeout=cfg.dist.max_requeues)
    optional = {f"slurm_{k}": getattr(args, k) for k in ("partition", "account", "qos",
                                                          "constraint", "mem")
                if getattr(args, k) is not None}
    executor.update_parameters(
        name=cfg.name, nodes=args.nodes, tasks_per_node=tasks, cpus_per_task=args.cpus_per_task,
        timeout_min=minutes(args.time), slurm_signal_delay_s=args.signal_s,
        slurm_setup=ENVIRONMENT,
        slurm_srun_args=["--kill-on-bad-exit=1"],
        slurm_additional_parameters={"requeue": True}, **optional,
        **({"gpus_per_node": args.gpus_per_node} if args.gpus_per_node else {}))
    return executor.submit(TrainingJob(args.config, tuple(overrides)))


def follow(job, poll_s: float = 3.0) -> int:
    """Prints the job's state changes until it ends; 0 when every task returned a result."""
    seen = None
    while True:
        try:
            state, restarts = job_state(job.job_id)
        except OSError as err:  # the controller busy or restarting: ask again
            print(f"job {job.job_id}: SLURM did not answer ({err})", flush=True)
            time.sleep(poll_s)
            continue
        if (state, restarts) != seen:
            print(f"job {job.job_id}: {state or 'gone from squeue'}, restarts {restarts}",
                  flush=True)
            seen = (state, restarts)
        if state is None or state in TERMINAL:
            break
        time.sleep(poll_s)
    tasks = [job.task(i) for i in range(job.num_tasks)]
    if not all(t.paths.result_pickle.exists() for t in tasks):
        print(f"job {job.job_id} ended {state} without a result from every task; see "
              f"{job.paths.stdout}", flush=True)
        return 1
    try:
        results = job.results()
    except Exception as err:  # submitit re-raises the task's traceback
        print(f"job {job.job_id} failed: {err}", flush=True)
        return 1
    print(f"job {job.job_id}: {results[0]}", flush=True)
    return 0 if all(r["status"] == 0 for r in results) else 1


def submit_training(args: argparse.Namespace) -> int:
    """Checks, submits and (with args.wait) follows the job; the command's exit status."""
    try:
        cfg, overrides, tasks = checked_request(args)
    except LaunchError as err:
        print(f"launch: {err}", file=sys.stderr)
        return 2
    job = submit(args, cfg, overrides, tasks)
    print(f"submitted SLURM job {job.job_id}: {args.nodes} nodes x {tasks} tasks\n"
          f"  logs:       {job.paths.folder / f'{job.job_id}_*_log.out'} (a file per task)\n"
          f"  run folder: {cfg.run_dir}", flush=True)
    if cfg.log.wandb == "online":
        print(f"  W&B:        https://wandb.ai/{cfg.log.entity or '<your entity>'}/"
              f"{cfg.log.project} (the run's own link is in its log)", flush=True)
    return follow(job) if args.wait else 0
