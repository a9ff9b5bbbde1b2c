"""Training: the assembly of a run's parts, the loop, and what the loop calls.

    process.py     a training process: stop signals first, then session.py's run
    session.py     config -> process group -> run folder -> trainer -> Outcome (outcome.py)
    assembly.py    config -> loaders -> derived values -> model -> engine, in one place
    trainer.py     the loop: train_one_epoch, validate, save, resume
    engines/       DDP or DeepSpeed behind forward_backward / step / save / load
    optim.py, schedule.py, loss.py, precision.py, validation.py
    checkpoint.py, state.py, preemption.py, reshape.py, continuity.py, rundir.py, runlock.py
"""
