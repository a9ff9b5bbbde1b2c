"""Training: the assembly of a run's parts, the loop, and what the loop calls.

    assembly.py    config -> loaders -> derived values -> model -> engine, in one place
    trainer.py     the loop: train_one_epoch, validate, save, resume
    engines/       DDP or DeepSpeed behind forward_backward / step / save / load
    optim.py, schedule.py, loss.py, precision.py
    checkpoint.py, state.py, preemption.py, evaluate.py, rundir.py
"""
