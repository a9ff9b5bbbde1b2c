"""The Section 4.2 variants (pipeline/paper/variants.py): a reduced run through the real
trainer and recipes, read back from the run folders, and the claims' verdicts."""

from __future__ import annotations

import json

from omegaconf import OmegaConf
from PIL import Image

from data_prep.manifest import read_manifest
from pipeline.monitor.history import read_rows
from pipeline.paper import __main__ as paper_cli
from pipeline.paper import variants


def test_a_reduced_study_trains_each_recipe_and_reports_what_the_run_folders_hold(tmp_path):
    out = tmp_path / "study"
    assert paper_cli.main(["variants", "--out", str(out), "--steps", "20", "--classes", "4",
                          "--train-per-class", "40", "--only", "bn_x30", "inception_x30"]) == 0
    report = json.loads((out / "variants.json").read_text())
    assert list(report["results"]) == ["bn_x30", "inception_x30"]
    for name, lr, bn in (("bn_x30", 0.045, True), ("inception_x30", 0.045, False)):
        folder = out / "runs" / name
        config = OmegaConf.load(folder / "config.yaml")
        # the recipe's own values, unscaled at its batch of 32, and the same budget
        assert (config.optim.base_lr, config.model.bn, config.data.batch_size) == (lr, bn, 32)
        assert config.model.dropout == (0.0 if bn else 0.4)
        val = [(r["step"], r["val/top1"]) for r in read_rows(folder / "metrics.jsonl")
               if "val/top1" in r]
        assert [step for step, _ in val] == [5, 10, 15, 20]  # 160 images: 5 steps an epoch
        result = report["results"][name]
        assert [tuple(point) for point in result["val_top1"]] == val
        assert result["best_top1"] == max(top1 for _, top1 in val)
    plotted = json.loads((out / "plots.json").read_text())["figures"]
    assert [f["file"] for f in plotted] == ["val_top1.png"]
    with Image.open(out / "val_top1.png") as image:
        image.verify()
    table = (out / "variants.md").read_text()
    assert "BN-x30 (lr 0.045)" in table and "Inception at BN-x30's lr 0.045" in table
    assert "fails at BN-x30's lr" in table and "BN-Baseline reaches" not in table


def _result(steps_to_target, best=0.9, status="trained"):
    return {"steps_to_target": steps_to_target, "best_top1": best, "status": status}


def test_each_claim_gets_its_verdict_from_the_numbers():
    results = {"inception": _result(None, 0.3), "bn_baseline": _result(200),
               "bn_x5": _result(100), "bn_x30": _result(250),
               "inception_x30": _result(None, 0.12), "bn_x5_sigmoid": _result(300, 0.15)}
    verdicts = dict(variants.claims(results, chance=0.1))
    assert verdicts == {
        "BN-Baseline reaches the target in fewer steps than Inception": "holds",
        "BN-x5 (lr 0.0075) reaches it in fewer steps than BN-Baseline": "holds",
        "BN-x30 (lr 0.045) reaches it in fewer steps than BN-Baseline":
            "does not hold at this scale",
        "Inception without BN fails at BN-x30's lr: it diverges or never reaches the "
        "target": "holds",
        "BN-x5-Sigmoid trains (best top-1 above 2x chance)": "does not hold at this scale"}
    diverged = {"inception_x30": _result(40, 0.95, "diverged")}
    assert variants.claims(diverged, 0.1)[0][1] == "holds"


def test_an_out_folder_of_the_users_is_refused_and_left_as_it_was(tmp_path, capsys):
    theirs = tmp_path / "runs" / "bn_x30" / "config.yaml"  # e.g. --out . in the repository
    theirs.parent.mkdir(parents=True)
    theirs.write_text("a user's run\n")
    assert paper_cli.main(["variants", "--out", str(tmp_path), "--only", "bn_x30"]) == 2
    assert "did not make" in capsys.readouterr().err
    assert theirs.read_text() == "a user's run\n"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "runs", "runs/bn_x30", "runs/bn_x30/config.yaml"]


def test_the_data_are_made_again_when_the_image_size_changes(tmp_path):
    small = variants.Scale(size=16, classes=2, train_per_class=4, val_per_class=2)
    shards = variants.make_data(tmp_path, small)
    assert _train_image_size(tmp_path) == (32, 32)  # generated at twice the crop
    assert variants.make_data(tmp_path, small) == shards  # the same scale: reused
    variants.make_data(tmp_path, variants.Scale(size=24, classes=2, train_per_class=4,
                                                val_per_class=2))
    assert _train_image_size(tmp_path) == (48, 48)
    assert read_manifest(shards / "train")["num_samples"] == 8


def _train_image_size(out) -> tuple[int, int]:
    first = sorted((out / "data" / "source" / "train").rglob("*.JPEG"))[0]
    with Image.open(first) as image:
        return image.size
