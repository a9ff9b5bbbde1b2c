"""Who a process is, its process group, and how it stops (the runtime every rank shares).

    environment.py  who a process is, from torchrun's or SLURM's variables (pure, no torch)
    group.py        the process group and the device (DistEnv)
    signals.py      the stop signals, caught from the first moment of the process
    requeue.py      after a preemption save: rank 0 requeues the SLURM job
    jobstate.py     what SLURM says of a job (state, restarts)
    endings.py      how each task of a job step ended, for the job script (culprits)
    watchdog.py     a rank stuck outside any collective ends as a crash
    __main__.py     python -m pipeline.dist: this task's launch as one JSON line
"""
