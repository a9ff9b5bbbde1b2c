"""The shards read back by webdataset and by DALI: every input in a shard or rejected."""

from __future__ import annotations

import io
import json

import webdataset as wds
from PIL import Image
from shard_helpers import manifest, read_dali, read_webdataset

from data_prep.sample import BROKEN


def test_every_input_is_in_a_shard_or_rejected(tree, sharded):
    root, written = tree
    train = manifest(sharded, "train")
    broken = {r for r in written["train"] if any(r.endswith(f"_{c}.JPEG") for c in BROKEN)}
    assert train["num_inputs"] == len(written["train"])
    assert {r["source"] for r in train["rejected"]} == broken
    stored = {s["meta"]["source"] for s in read_webdataset(sharded, "train").values()}
    assert stored == set(written["train"]) - broken
    assert train["num_samples"] == len(stored) == sum(train["class_counts"].values())


def test_labels_are_the_sorted_train_wnid_index(tree, sharded):
    classes = json.loads((sharded / "classes.json").read_text())
    wnids = sorted(set(tree[1]["train"].values()))
    assert [c["wnid"] for c in classes] == wnids
    assert [c["index"] for c in classes] == list(range(len(wnids)))
    assert classes[0]["name"] and classes[0]["name"] != classes[0]["wnid"]
    for split in ("train", "val"):
        for key, s in read_webdataset(sharded, split).items():
            assert s["label"] == wnids.index(s["meta"]["wnid"]), key
            assert s["meta"]["wnid"] == tree[1][split][s["meta"]["source"]], key


def test_dali_reads_every_sample_once_through_the_index_files(sharded):
    for split in ("train", "val"):
        by_webdataset = read_webdataset(sharded, split)
        rows = read_dali(sharded, split)
        sources = [r["meta"]["source"] for r in rows]
        assert sorted(sources) == sorted(s["meta"]["source"] for s in by_webdataset.values())
        for row in rows:
            assert row["shape"] == (row["meta"]["height"], row["meta"]["width"], 3)


def test_defects_of_the_real_train_set_become_rgb_jpegs(sharded):
    converted = {c["source"].rsplit("_", 1)[1]: c["conversions"]
                 for c in manifest(sharded, "train")["converted"]}
    assert converted == {"cmyk.JPEG": ["cmyk_to_rgb"], "png.JPEG": ["png_to_jpeg"],
                         "gray.JPEG": ["grayscale_to_rgb"]}
    for s in read_webdataset(sharded, "train").values():
        image = Image.open(io.BytesIO(s["jpg"]))
        assert (image.format, image.mode) == ("JPEG", "RGB")
        assert image.size == (s["meta"]["width"], s["meta"]["height"])


def test_train_shards_mix_classes_and_val_keeps_file_order(sharded):
    first = [json.loads(s["json"])["wnid"] for s in
             wds.WebDataset(str(sharded / "train" / "train-000000.tar"), shardshuffle=False)]
    assert len(set(first)) >= 3, f"first train shard holds only {set(first)}"
    val_sources = [s["meta"]["source"] for s in read_webdataset(sharded, "val").values()]
    assert val_sources == sorted(val_sources)


def test_manifest_checksums_and_reject_reasons(sharded):
    import hashlib

    train = manifest(sharded, "train")
    for shard in train["shards"]:
        data = (sharded / "train" / shard["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert len(data) == shard["bytes"]
    reasons = {r["source"].rsplit("_", 1)[1]: r["reason"] for r in train["rejected"]}
    assert reasons["empty.JPEG"] == "empty file"
    assert reasons["text.JPEG"].startswith("not an image")
    assert "truncated" in reasons["truncated.JPEG"]
    assert train["arguments"]["shard_size"] == 10 and train["created_by"]["pillow"]
