"""Every recipe in configs/ resolves at 1, 8 and 64 ranks on ImageNet's train set, to the
values the table in its own comments claims (global batch, peak lr, steps, BN batch)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.resolve import resolve

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs").glob("*.yaml"))
IMAGENET_TRAIN = 1_281_167
WORLDS = (1, 8, 64)
TABLE_MARK = "tests/test_recipes.py checks this table"


def claimed(recipe: Path) -> dict[int, dict[str, float]]:
    """{ranks: {column: value}} from the comment table under TABLE_MARK."""
    lines = recipe.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if TABLE_MARK in line), None)
    assert start is not None, f"{recipe.name} has no derived-values table ({TABLE_MARK!r})"
    header = lines[start + 1].lstrip("# ").split()
    rows = {}
    for line in lines[start + 2:]:
        if not re.fullmatch(r"#\s+[\d.\s]+", line):
            break
        values = dict(zip(header, (float(v) for v in line.lstrip("# ").split()), strict=True))
        rows[int(values.pop("ranks"))] = values
    return rows


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_the_recipe_resolves_to_the_values_its_comments_claim(recipe):
    table = claimed(recipe)
    assert sorted(table) == list(WORLDS), f"{recipe.name}: a row for each of {WORLDS} ranks"
    cfg = load_config(recipe, ["data.shards=/data/imagenet-shards"])
    for world, expected in table.items():
        run = resolve(cfg, world, IMAGENET_TRAIN, ranks_per_node=min(world, 8)).as_dict()
        got = {key: run[key] for key in expected}
        assert got == pytest.approx(expected, rel=1e-9), f"{recipe.name} at {world} ranks"


def test_a_wrong_claim_is_caught(tmp_path):
    """The check above can fail: one digit off in a copied recipe's table."""
    recipe = tmp_path / "copy.yaml"
    text = (REPO / "configs" / "bn_inception.yaml").read_text()
    recipe.write_text(text.replace(" 3.2 ", " 3.1 ", 1))
    assert claimed(recipe)[64]["lr"] == 3.1
    with pytest.raises(AssertionError, match="at 64 ranks"):
        test_the_recipe_resolves_to_the_values_its_comments_claim(recipe)


def test_a_recipe_on_a_base_gets_the_base_then_its_own_differences(tmp_path):
    x30 = load_config(REPO / "configs" / "bn_x30.yaml", ["data.shards=/x"])
    x5 = load_config(REPO / "configs" / "bn_x5.yaml", ["data.shards=/x"])
    assert (x30.optim.base_lr, x5.optim.base_lr) == (0.045, 0.0075)
    assert x30.optim.weight_decay == x5.optim.weight_decay == 4e-5  # from the base
    assert x30.schedule.exp_every_epochs == x5.schedule.exp_every_epochs == 8 / 6
    # two levels: the cluster recipe over bn_x30 over bn_x5
    b64 = load_config(REPO / "configs" / "bn_x30_64gpu_b64.yaml", ["data.shards=/x"])
    assert (b64.data.batch_size, b64.optim.base_lr, b64.log.wandb) == (64, 0.045, "online")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="makes a cycle"):
        load_config(tmp_path / "a.yaml", ["data.shards=/x"])
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ValueError, match=r"c.yaml: base: missing.yaml not found"):
        load_config(tmp_path / "c.yaml", ["data.shards=/x"])
