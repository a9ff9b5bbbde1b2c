"""Launching: who each process is, the process group, and (coming) SLURM submission.

environment.py reads the launcher's variables (pure functions of a mapping, no torch);
distributed.py starts the process group and picks the device from them.
"""
