"""What may change between two starts of one run, and what makes it another experiment.

    changes = config_changes(saved_yaml, cfg)   # ["optim.base_lr: 0.1 -> 0.2", ...]
    check_continuation(saved_yaml, cfg)         # ConfigChanged unless only SAFE keys differ

A recipe started again without a new name= resumes the old run of that name; if its
settings differ, the result is neither experiment. Where the run lives (name, runs_dir:
a copied or renamed run folder resumes), where a job runs, how fast, how often it saves
or logs, how long it trains (schedule.epochs), the per-GPU batch and the accumulation
(the run's shape: see reshape.py) may change on resume; the model, the optimizer, the
schedule's shape, the augmentation and the seeds may not, unless
checkpoint.allow_config_change says so (the log then names every key it let through).
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import OmegaConf

from pipeline.config import Config, to_dict

# Keys (or whole sections, with a trailing dot) that a resume may change.
SAFE = ("name", "runs_dir", "dist.", "log.", "checkpoint.", "eval.", "schedule.epochs",
        "model.compile", "precision.deterministic", "data.shards", "data.stage_dir",
        "data.num_workers", "data.prefetch", "data.hw_decoder_load",
        "data.batch_size", "optim.accumulation", "data.channels_last", "data.return_keys")


log = logging.getLogger("pipeline.train")


class ConfigChanged(ValueError):
    pass


def config_changes(saved_yaml: str, cfg: Config) -> list[str]:
    """`key: old -> new` for every key outside SAFE that differs from the saved config."""
    old, new = _flat(OmegaConf.to_container(OmegaConf.create(saved_yaml))), _flat(to_dict(cfg))
    keys = sorted(old.keys() | new.keys())
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys
            if old.get(k) != new.get(k) and not is_safe(k)]


def is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE)


def check_continuation(saved_yaml: str, cfg: Config, checkpoint: str) -> None:
    changes = config_changes(saved_yaml, cfg)
    if changes and cfg.checkpoint.allow_config_change:
        log.warning("checkpoint.allow_config_change lets through what %s was saved with: %s",
                    checkpoint, "; ".join(changes))
    elif changes:
        raise ConfigChanged(
            f"run {cfg.run_dir} has a checkpoint ({checkpoint}) of another config: "
            f"{'; '.join(changes)}. Resuming would mix two experiments: start this one "
            "with a new name=, or set checkpoint.allow_config_change=true to resume anyway "
            f"(keys that may always change: {', '.join(SAFE)})")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}
