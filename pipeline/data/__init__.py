"""The input pipeline: WebDataset shards -> DALI (or webdataset workers) -> torch batches.

    from pipeline.data import build_train_loader, build_val_loader

data_prep/manifest.py checks the shards against their manifest (load_split), epochs.py
plans who reads what, dali.py and webdataset_backend.py read it, loader.py hands batches
to the trainer.
"""

from data_prep.manifest import ShardError
from pipeline.data.loader import TrainLoader, ValLoader, build_train_loader, build_val_loader

__all__ = ["ShardError", "TrainLoader", "ValLoader", "build_train_loader", "build_val_loader"]
