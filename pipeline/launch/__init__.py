"""Launching: who each process is, the process group, SLURM submission and its checks.

    environment.py  who a process is, from torchrun's or SLURM's variables (pure, no torch)
    signals.py      the stop signals, caught from the first moment of the process
    distributed.py  the process group and the device (DistEnv)
    requeue.py      after a preemption save: rank 0 requeues the SLURM job
    submit.py       the submitit launcher (python -m pipeline.launch)
    preflight.py    checks of an allocation (python -m pipeline.preflight)
    staging.py      node-local copies of the shards (data.stage_dir)
"""
