"""Bad input and bad arguments: a clear error naming what to fix, and the exit status."""

from __future__ import annotations

import csv

import pytest
from shard_helpers import TREE, run_shard

from data_prep import sample


@pytest.fixture()
def source(tmp_path):
    sample.generate(tmp_path, **TREE)
    return tmp_path


def test_missing_source(tmp_path):
    result = run_shard("--source", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "nowhere is not a folder" in result.stderr


def test_source_without_train(tmp_path):
    result = run_shard("--source", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "no train/ folder and no ILSVRC2012_img_train.tar" in result.stderr


def test_empty_class_folder(source):
    (source / "train" / "n09999999").mkdir()
    result = run_shard("--source", source, "--out", source / "out")
    assert result.returncode == 2
    assert "n09999999: class folder is empty" in result.stderr


def test_class_folder_that_is_not_a_wnid(source):
    (source / "train" / "cats").mkdir()
    result = run_shard("--source", source, "--out", source / "out")
    assert result.returncode == 2
    assert "'cats' is not a wnid" in result.stderr


def test_val_wnid_not_in_train(tmp_path):
    sample.generate(tmp_path, **TREE, val_layout="flat")
    with open(tmp_path / "LOC_val_solution.csv", "a", newline="") as f:
        csv.writer(f).writerow(["ILSVRC2012_val_00000001", "n09999999 1 2 3 4"])
    result = run_shard("--source", tmp_path, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "ILSVRC2012_val_00000001.JPEG has wnid n09999999, which is not a train class" \
        in result.stderr


def test_flat_val_without_csv(tmp_path):
    sample.generate(tmp_path, **TREE, val_layout="flat")
    (tmp_path / "LOC_val_solution.csv").unlink()
    result = run_shard("--source", tmp_path, "--out", tmp_path / "out", "--splits", "val")
    assert result.returncode == 2
    assert "no LOC_val_solution.csv was found" in result.stderr and "--val-labels" in result.stderr


def test_duplicate_sample_keys(source):
    wnids = sorted(p.name for p in (source / "train").iterdir())
    (source / "train" / wnids[1] / f"{wnids[0]}_0.JPEG").write_bytes(b"x")
    result = run_shard("--source", source, "--out", source / "out")
    assert result.returncode == 2
    assert f"two inputs map to the sample key '{wnids[0]}_0'" in result.stderr


def test_rejects_over_the_allowance_fail_the_run(tmp_path):
    sample.generate(tmp_path, **TREE, bad=True)
    result = run_shard("--source", tmp_path, "--out", tmp_path / "out", "--max-rejects", "2")
    assert result.returncode == 1
    assert "3 inputs rejected (allowed: 2)" in result.stderr
    assert result.stdout.count("rejected train/") == 3
    assert (tmp_path / "out" / "train" / "manifest.json").is_file()  # the record is kept


def test_stray_file_beside_the_class_folders_is_rejected_not_lost(source):
    (source / "train" / "README.txt").write_text("notes")
    result = run_shard("--source", source, "--out", source / "out", "--splits", "train")
    assert result.returncode == 1
    assert "rejected train/README.txt: not in a class folder" in result.stdout


def test_arguments_are_checked():
    assert run_shard().returncode == 2
    assert "give --source and --out" in run_shard().stderr
