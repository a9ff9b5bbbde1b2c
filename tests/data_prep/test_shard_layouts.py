"""Input layouts (flat val with CSV, the original archives) and output options."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from shard_helpers import TREE, manifest, read_webdataset, run_shard

from data_prep import sample


@pytest.fixture(scope="module")
def folder_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    written = sample.generate(root, **TREE, seed=3)
    out = root / "out"
    assert run_shard("--source", root, "--out", out, "--workers", "1").returncode == 0
    return out, written


def test_flat_val_takes_labels_from_the_csv(tmp_path):
    written = sample.generate(tmp_path, **TREE, val_layout="flat")
    (tmp_path / "val" / "ILSVRC2012_val_99999999.JPEG").write_bytes(b"unlabelled")
    result = run_shard("--source", tmp_path, "--out", tmp_path / "out", "--splits", "val",
                       "--max-rejects", "1")
    assert result.returncode == 0, result.stderr
    samples = read_webdataset(tmp_path / "out", "val")
    assert {s["meta"]["source"]: s["meta"]["wnid"] for s in samples.values()} == written["val"]
    rejected = manifest(tmp_path / "out", "val")["rejected"]
    assert rejected == [{"source": "val/ILSVRC2012_val_99999999.JPEG",
                         "reason": "no label in LOC_val_solution.csv"}]


def test_archives_are_read_in_place_and_match_the_folders(folder_shards, tmp_path):
    folder_out, _ = folder_shards
    sample.generate(tmp_path, **TREE, seed=3, archives=True)
    assert not (tmp_path / "train").exists()
    result = run_shard("--source", tmp_path, "--out", tmp_path / "out", "--workers", "2")
    assert result.returncode == 0, result.stderr
    for split in ("train", "val"):
        from_archive = read_webdataset(tmp_path / "out", split)
        from_folders = read_webdataset(folder_out, split)
        assert list(from_archive) == list(from_folders)  # same keys in the same order
        for key, s in from_archive.items():
            assert s["jpg"] == from_folders[key]["jpg"] and s["label"] == from_folders[key]["label"]
            assert s["meta"]["source"].startswith(f"ILSVRC2012_img_{split}.tar/")


def test_resize_shorter_reencodes_and_records_it(tmp_path):
    sample.generate(tmp_path, classes=2, train_per_class=4, val_per_class=1, size=(200, 150))
    result = run_shard("--source", tmp_path, "--out", tmp_path / "out", "--splits", "train",
                       "--resize-shorter", "64", "--quality", "80")
    assert result.returncode == 0, result.stderr
    for s in read_webdataset(tmp_path / "out", "train").values():
        image = Image.open(io.BytesIO(s["jpg"]))
        assert image.size == (85, 64) == (s["meta"]["width"], s["meta"]["height"])
        assert s["meta"]["conversions"] == ["resize_200x150_to_85x64"]
    assert manifest(tmp_path / "out", "train")["converted"] == []  # a resize is no repair


def test_shard_bytes_caps_the_input_bytes_per_shard(folder_shards, tmp_path):
    out, written = folder_shards
    cap = 40000
    result = run_shard("--source", out.parent, "--out", tmp_path / "out", "--splits", "train",
                       "--shard-bytes", cap)
    assert result.returncode == 0, result.stderr
    samples = read_webdataset(tmp_path / "out", "train").values()
    assert len(samples) == len(written["train"])
    per_shard: dict[str, list[int]] = {}
    for s in samples:
        shard = s["meta"]["source"]
        per_shard.setdefault(s["shard"], []).append((out.parent / shard).stat().st_size)
    assert len(per_shard) > 1
    for sizes in per_shard.values():
        assert sum(sizes) <= cap or len(sizes) == 1
