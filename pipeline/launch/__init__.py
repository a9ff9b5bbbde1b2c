"""Submitting a training to SLURM from Python, and checking an allocation first.

    submit.py     the submitit launcher's engine: the request checked, the job submitted
                  and followed (python -m pipeline.launch, __main__.py)
    checks.py     checks of an allocation: GPUs, links, shards, BN groups
                  (python -m pipeline.preflight)
"""
