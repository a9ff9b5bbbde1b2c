"""Bad input and bad arguments: a clear error naming what to fix, and the exit status."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess

import pytest
from shard_helpers import TREE, manifest, run_shard

from data_prep import sample, shard


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


@pytest.mark.parametrize("flag,value,allowed", [
    ("--resize-shorter", "0", "at least 1"), ("--resize-shorter", "-5", "at least 1"),
    ("--quality", "0", "from 1 to 100"), ("--quality", "500", "from 1 to 100"),
    ("--shard-size", "0", "at least 1"), ("--shard-bytes", "0", "at least 1"),
    ("--max-rejects", "-1", "at least 0"), ("--workers", "0", "at least 1"),
    ("--seed", "-1", "at least 0"), ("--slurm-tasks", "0", "at least 1"),
    ("--slurm-cpus-per-task", "0", "at least 1"), ("--slurm-time-min", "0", "at least 1"),
    ("--slurm-mem-gb", "0", "at least 1"), ("--quality", "high", "whole number"),
])
def test_numeric_arguments_out_of_range_name_the_flag(flag, value, allowed, capsys):
    with pytest.raises(SystemExit) as exit_:
        shard.parse_args(["--source", "s", "--out", "o", flag, value])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert f"argument {flag}: " in last and allowed in last


@pytest.mark.parametrize("out", [".", "train", "val/n01440764/shards"])
def test_out_in_the_folders_that_are_read_is_refused(source, out):
    link = source.parent / f"{source.name}-link"  # through a symlink: resolved first
    link.symlink_to(source)
    result = run_shard("--source", link, "--out", link / out)
    assert result.returncode == 2
    assert "is --source or inside its train/ or val/" in result.stderr
    assert not (source / "classes.json").exists() and not list(source.rglob("*.tar"))


def test_a_missing_val_is_named_before_any_train_shard_is_written(source):
    shutil.rmtree(source / "val")
    result = run_shard("--source", source, "--out", source.parent / "out")
    assert result.returncode == 2
    assert "no val/ folder and no ILSVRC2012_img_val.tar" in result.stderr
    assert not (source.parent / "out" / "train").exists()


def test_the_val_csv_is_found_above_a_relative_source(tmp_path):
    cls_loc = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    sample.generate(cls_loc, classes=2, train_per_class=1, val_per_class=2, val_layout="flat")
    (cls_loc / "LOC_val_solution.csv").rename(tmp_path / "LOC_val_solution.csv")
    result = run_shard("--source", ".", "--out", tmp_path / "out", "--splits", "val",
                       "--workers", "1", cwd=cls_loc)
    assert result.returncode == 0, result.stderr
    assert manifest(tmp_path / "out", "val")["num_samples"] == 4


def test_an_out_that_cannot_be_made_is_one_line(source):
    (source.parent / "a-file").write_text("")
    result = run_shard("--source", source, "--out", source.parent / "a-file" / "out")
    assert result.returncode == 2
    assert result.stderr == f"error: {source.parent / 'a-file' / 'out'}: Not a directory " \
                            "(NotADirectoryError, errno 20)\n"


@pytest.fixture()
def small_disk(tmp_path):
    """A 96 KiB tmpfs: classes.json fits, the shards do not."""
    disk = tmp_path / "small"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs to mount a small tmpfs (root)")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def test_a_full_disk_is_one_line_and_leaves_no_partial_files(tmp_path, small_disk):
    sample.generate(tmp_path / "src", classes=2, train_per_class=8, val_per_class=1,
                    size=(160, 120))
    result = run_shard("--source", tmp_path / "src", "--out", small_disk, "--shard-size", "2",
                       "--workers", "2")
    assert result.returncode == 2
    assert re.fullmatch(rf"error: {small_disk}/train/train-\d{{6}}\.(tar|idx): disk full: "
                        r"free space there or write elsewhere \(OSError, errno 28\)\n",
                        result.stderr.splitlines(keepends=True)[-1])
    assert "Traceback" not in result.stderr
    assert not list(small_disk.rglob("*.partial-*"))


def test_a_read_only_disk_is_one_line(source, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = run_shard("--source", source, "--out", small_disk)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {small_disk}/classes.json.partial-")
    assert "read-only file system: write elsewhere (OSError, errno 30)" in result.stderr
