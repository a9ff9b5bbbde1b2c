"""The data section of the config tree: defaults, recipe + overrides, checked values."""

from __future__ import annotations

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from pipeline.config import DataConfig, describe, load_config, to_yaml


def test_overrides_and_recipes_are_typed(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  batch_size: 192\n  dtype: bfloat16\n")
    cfg = load_config(recipe, ["data.shards=/data/shards", "data.crop_area=[0.25,1.0]"])
    assert cfg.data.batch_size == 192 and cfg.data.dtype == "bfloat16"
    assert cfg.data.crop_area == (0.25, 1.0) and cfg.data.image_size == 224
    assert "batch_size: 192" in to_yaml(cfg)


@pytest.mark.parametrize("override, error", [
    ("data.batch_sise=3", ConfigKeyError),
    ("data.batch_size=many", ValidationError),
    ("data.dtype=int8", ValueError),
    ("data.backend=tfrecord", ValueError),
    ("data.crop_area=[0.9,0.1]", ValueError),
    ("data.flip_prob=2", ValueError),
])
def test_bad_values_are_errors(override, error):
    with pytest.raises(error):
        load_config(None, ["data.shards=/data/shards", override])


def test_every_field_has_help():
    lines = describe(DataConfig).splitlines()
    assert len(lines) == len(DataConfig.__dataclass_fields__)
    assert all(line.split(": ", 1)[1] for line in lines)
