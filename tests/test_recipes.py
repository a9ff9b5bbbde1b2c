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
