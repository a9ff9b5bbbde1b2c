"""Odd inputs a real download holds: each one in a shard, read alike by DALI and PIL, or
listed as rejected with its reason; and a captured log of whole lines."""

from __future__ import annotations

import io
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from shard_helpers import SHARD_SCRIPT, manifest, read_dali, read_webdataset, run_shard

from data_prep import sample
from data_prep.dali_index import parse_index
from data_prep.images import ORIENTATION

UPRIGHT = (40, 24)  # width, height of the EXIF-rotated test image once it is upright


def rotated_jpeg() -> bytes:
    """Stored 24 wide and 40 high with orientation 6: upright it is 40x24, red over blue."""
    upright = np.zeros((UPRIGHT[1], UPRIGHT[0], 3), np.uint8)
    upright[: UPRIGHT[1] // 2] = (255, 0, 0)
    upright[UPRIGHT[1] // 2:] = (0, 0, 255)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 90 left
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "turn 90 right to view"
    out = io.BytesIO()
    stored.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def gray16_png() -> bytes:
    """A 16-bit grayscale PNG whose column x holds x * 257: 8-bit value x."""
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (8, 1))
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, format="PNG")
    return out.getvalue()


def jpeg_with_broken_exif() -> bytes:
    """EXIF whose one text tag points past the end: Pillow warns while reading it."""
    entry = struct.pack("<HHII", 0x010E, 2, 200, 1000)  # ImageDescription, 200 bytes at 1000
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "gray").save(out, format="JPEG", exif=b"Exif\x00\x00" + tiff)
    return out.getvalue()


def claimed_size_jpeg(width: int, height: int) -> bytes:
    """A small JPEG whose header claims width x height (what Pillow's bomb check reads)."""
    data = bytearray(sample.encode(Image.new("RGB", (8, 8))))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    written = sample.generate(root, classes=2, train_per_class=2, val_per_class=1,
                              size=(48, 32))
    w0, w1 = sorted(p for p in (root / "train").iterdir())
    (w0 / f"{w0.name}_9 (copy).JPEG").write_bytes((w0 / f"{w0.name}_0.JPEG").read_bytes())
    (w0 / f"{w0.name}_gray16.JPEG").write_bytes(gray16_png())
    (w0 / f"{w0.name}_rot6.JPEG").write_bytes(rotated_jpeg())
    (w0 / f"{w0.name}_badexif.JPEG").write_bytes(jpeg_with_broken_exif())
    (w1 / "extra" / "deeper").mkdir(parents=True)
    (w1 / "extra" / "a.JPEG").write_bytes(b"not read")
    (w1 / "extra" / "deeper" / "b.JPEG").write_bytes(b"not read")
    (w1 / f"{w1.name}_gone.JPEG").symlink_to(root / "nowhere.JPEG")
    (root / "train" / "notes").symlink_to(root / "nowhere")
    return root, w0.name, w1.name, len(written["train"]) + 4


@pytest.fixture(scope="module")
def copied(odd_tree):
    """Copy mode, stdout and stderr captured together as bytes, the way a log file is."""
    root = odd_tree[0]
    command = [sys.executable, str(SHARD_SCRIPT), "--source", str(root), "--out",
               str(root.parent / f"{root.name}-out"), "--splits", "train", "--shard-size", "3",
               "--workers", "1", "--max-rejects", "4"]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=180)
    assert result.returncode == 0, result.stdout.decode()
    return root.parent / f"{root.name}-out", result.stdout


def by_source(out, name: str) -> dict:
    return next(s for s in read_webdataset(out, "train").values()
                if s["meta"]["source"].endswith(name))


def test_nested_files_and_dangling_symlinks_are_listed_as_rejected(odd_tree, copied):
    _, w0, w1, shardable = odd_tree
    train = manifest(copied[0], "train")
    reasons = {r["source"]: r["reason"].split(":")[0] for r in train["rejected"]}
    assert reasons == {f"train/{w1}/extra/a.JPEG": "nested folder",
                       f"train/{w1}/extra/deeper/b.JPEG": "nested folder",
                       f"train/{w1}/{w1}_gone.JPEG": "dangling symlink",
                       "train/notes": "dangling symlink"}
    assert (train["num_samples"], train["num_rejected"], train["num_inputs"]) == \
        (shardable, 4, shardable + 4)


def test_a_file_name_with_a_space_gets_a_key_dali_reads(odd_tree, copied):
    out, w0 = copied[0], odd_tree[1]
    assert by_source(out, "_9 (copy).JPEG")["meta"]["source"] == f"train/{w0}/{w0}_9 (copy).JPEG"
    assert f"{w0}_9_(copy)" in read_webdataset(out, "train")
    for shard in manifest(out, "train")["shards"]:
        parse_index((out / "train" / shard["index"]).read_text())
    rows = read_dali(out, "train")  # through the index files, as training reads them
    assert len(rows) == manifest(out, "train")["num_samples"]
    assert any(r["meta"]["source"].endswith("_9 (copy).JPEG") for r in rows)


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(copied):
    s = by_source(copied[0], "_gray16.JPEG")
    pixels = np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("L"), dtype=int)
    assert np.abs(pixels - np.arange(256)[None, :]).max() <= 4
    assert s["meta"]["conversions"] == ["png_to_jpeg", "gray16_to_rgb"]


def check_upright(out, resized: tuple[int, int] | None) -> None:
    s = by_source(out, "_rot6.JPEG")
    image = Image.open(io.BytesIO(s["jpg"]))
    size = resized or UPRIGHT
    assert image.size == size == (s["meta"]["width"], s["meta"]["height"])
    assert image.getexif().get(ORIENTATION, 1) == 1  # nothing left for a reader to apply
    pixels = np.asarray(image.convert("RGB"), dtype=int)
    assert pixels[1, size[0] // 2, 0] > 200 and pixels[-2, size[0] // 2, 2] > 200  # red on top
    row = next(r for r in read_dali(out, "train") if r["meta"]["source"].endswith("_rot6.JPEG"))
    assert row["shape"] == (size[1], size[0], 3)  # DALI decodes the same upright image
    converted = {c["source"]: c["conversions"] for c in manifest(out, "train")["converted"]}
    assert converted[s["meta"]["source"]][0] == "exif_orientation_6"


def test_exif_orientation_is_applied_once_in_copy_mode(copied):
    check_upright(copied[0], None)


def test_exif_orientation_is_applied_before_resize_shorter(odd_tree, tmp_path):
    result = run_shard("--source", odd_tree[0], "--out", tmp_path, "--splits", "train",
                       "--workers", "1", "--max-rejects", "4", "--resize-shorter", "16")
    assert result.returncode == 0, result.stderr
    check_upright(tmp_path, (27, 16))


def test_pillow_warnings_are_kept_with_the_file_they_came_from(odd_tree, copied):
    w0 = odd_tree[1]
    warnings = manifest(copied[0], "train")["warnings"]
    assert [w["source"] for w in warnings] == [f"train/{w0}/{w0}_badexif.JPEG"]
    assert f"warning train/{w0}/{w0}_badexif.JPEG: {warnings[0]['warning']}\n".encode() \
        in copied[1]


def test_a_captured_log_has_whole_lines_and_no_progress_bar(odd_tree, copied):
    assert b"\r" not in copied[1]
    lines = copied[1].decode().splitlines()
    rejected = [line for line in lines if "rejected train/" in line]
    assert len(rejected) == 4 and all(line.startswith("rejected train/") for line in rejected)
    assert any(line.startswith("train: 8/8 images, 4 rejected") for line in lines)


def test_images_over_the_decompression_bomb_limit_are_rejected(tmp_path):
    sample.generate(tmp_path, classes=1, train_per_class=1, val_per_class=1, size=(32, 24))
    wnid = next((tmp_path / "train").iterdir()).name
    folder = tmp_path / "train" / wnid
    (folder / "huge.JPEG").write_bytes(claimed_size_jpeg(15000, 15000))  # over 2x: an error
    (folder / "big.JPEG").write_bytes(claimed_size_jpeg(10000, 10000))  # over 1x: a warning
    result = run_shard("--source", tmp_path, "--out", tmp_path.parent / "bomb-out",
                       "--splits", "train", "--workers", "1", "--max-rejects", "2")
    assert result.returncode == 0, result.stderr
    train = manifest(tmp_path.parent / "bomb-out", "train")
    assert train["num_samples"] == 1
    assert {r["source"]: r["reason"].split(" (")[0] for r in train["rejected"]} == {
        f"train/{wnid}/huge.JPEG": "too large to decode safely",
        f"train/{wnid}/big.JPEG": "too large to decode safely"}
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr


def test_a_shard_whose_every_input_was_rejected_passes_verify_and_the_loader_skips_it(
        tmp_path):
    import torch

    from pipeline.config import DataConfig
    from pipeline.data import build_train_loader

    written = sample.generate(tmp_path / "src", classes=2, train_per_class=2, val_per_class=1,
                              bad=True)
    out = tmp_path / "out"
    result = run_shard("--source", tmp_path / "src", "--out", out, "--shard-size", "1",
                       "--workers", "1", "--max-rejects", str(len(sample.BROKEN)))
    assert result.returncode == 0, result.stdout + result.stderr
    train = manifest(out, "train")
    empty = [s for s in train["shards"] if s["samples"] == 0]
    assert empty  # a broken file alone in its shard
    assert run_shard("--verify", out, "--workers", "1").returncode == 0

    loader = build_train_loader(DataConfig(shards=str(out), image_size=32, batch_size=1,
                                           num_workers=1, shuffle_buffer=1, prefetch=1),
                                0, 1, torch.device("cpu"))
    loader.set_epoch(0)
    assert sum(len(labels) for _, labels in loader) == train["num_samples"] == \
        len(written["train"]) - len(empty)
