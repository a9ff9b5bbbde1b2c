"""The whole config tree: recipes load, bad keys and values are errors that name them."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from pipeline.config import Config, describe_tree, load_config
from pipeline.train import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("override, error, named", [
    ("optim.base_lrr=0.1", ConfigKeyError, "base_lrr"),
    ("schedule.epochs=ninety", ValidationError, "epochs"),
    ("precision.deterministic=maybe", ValidationError, "deterministic"),
    ("optim.name=adam", ValueError, "optim.name"),
    ("schedule.decay=linear", ValueError, "schedule.decay"),
    ("model.sync_bn=rack", ValueError, "model.sync_bn"),
    ("dist.zero_stage=3", ValueError, "dist.zero_stage"),
    ("schedule.milestones=[60,30]", ValueError, "schedule.milestones"),
    ("log.wandb=yes", ValueError, "'True': expected online, offline or disabled. YAML"),
])
def test_bad_keys_and_values_name_the_key(override, error, named):
    with pytest.raises(error, match=named):
        load_config(None, ["data.shards=/data/shards", override])


def test_the_command_line_reports_config_errors_without_a_traceback(capsys):
    assert main(["data.shards=/x", "optim.momentun=0.9"]) == 2
    assert "config error" in capsys.readouterr().err


def test_describe_lists_every_key_with_its_default_and_help():
    """One line per leaf of the tree, each default as the tree holds it."""
    lines = describe_tree(Config).splitlines()
    assert "optim.base_lr = 0.1: learning rate at reference_batch (Goyal et al.: 0.1 per " \
           "256)" in lines
    assert all(line.split(": ", 1)[1] for line in lines if not line.startswith("data.shards"))
    defaults = Config()
    leaves = [(section.name, key.name) for section in fields(Config)
              if is_dataclass(getattr(defaults, section.name))
              for key in fields(getattr(defaults, section.name))]
    for section, key in leaves:
        value = getattr(getattr(defaults, section), key)
        assert any(line.startswith(f"{section}.{key} = {value!r}: ") for line in lines), key
    assert len(lines) == len(leaves) + sum(
        not is_dataclass(getattr(defaults, f.name)) for f in fields(Config))
