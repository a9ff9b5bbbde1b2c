"""Real-world odd files, every one named .JPEG as ImageNet names its files: shard.py never
dies on one, accounts for each (a sample whose .json names it, or a reject with a reason),
and every stored image decodes with Pillow and with DALI's CPU decoder to its .json size.

The generated set (odd_images.py) always runs. Pillow's own test images (about a thousand
files: every format Pillow knows, broken headers, bombs, odd markers, 16-bit, palettes,
orientation outside EXIF) run when PILLOW_TEST_IMAGES names a checkout of them at the
commit pinned in image_corpus.json; only files whose sha256 matches the pin are used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from odd_images import SAMPLE, odd_files
from PIL import Image, ImageOps
from shard_helpers import manifest, read_webdataset, run_shard

from data_prep import sample
from data_prep.dali_decode import dali_sizes

PIN = Path(__file__).with_name("image_corpus.json")


def imagenet_tree(root: Path, files: dict[str, bytes]) -> dict[str, str]:
    """A small ILSVRC-shaped tree plus `files` in the first train class, each renamed .JPEG;
    returns {relpath of each added file: its name}."""
    written = sample.generate(root, classes=2, train_per_class=4, val_per_class=2)
    wnid = sorted(written["train"].values())[0]  # the odd files join the first class
    added = {}
    for i, (name, data) in enumerate(sorted(files.items())):
        path = root / "train" / wnid / f"{wnid}_{90000 + i}.JPEG"
        path.write_bytes(data)
        added[str(path.relative_to(root))] = name
    return added


def shard_and_verify(source: Path, out: Path, rejects: int) -> None:
    done = run_shard("--source", source, "--out", out, "--shard-size", "64", "--workers", "2",
                     "--max-rejects", rejects)
    assert done.returncode == 0, done.stderr[-3000:]
    checked = run_shard("--verify", out, "--workers", "2")
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]


def accounted(out: Path, source: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Every train input exactly once: ({source: sample}, {source: reject reason})."""
    stored = {s["meta"]["source"]: s for s in read_webdataset(out, "train").values()}
    rejected = {r["source"]: r["reason"] for r in manifest(out, "train")["rejected"]}
    inputs = {str(p.relative_to(source)) for p in (source / "train").rglob("*") if p.is_file()}
    assert not stored.keys() & rejected.keys()
    assert stored.keys() | rejected.keys() == inputs
    m = manifest(out, "train")
    assert (m["num_inputs"], m["num_samples"], m["num_rejected"]) == \
        (len(inputs), len(stored), len(rejected))
    return stored, rejected


def reference(path: Path) -> Image.Image | None:
    """The input as Pillow shows it, upright and in RGB (16-bit scaled); None when Pillow
    cannot decode it fully or its pixels have no fixed range (32-bit integer and float)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(path)
            image.load()
            if image.mode in ("I", "F"):
                return None
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16"):
                wide = np.asarray(image).astype(np.uint32)
                image = Image.fromarray((wide * 255 // 65535).astype(np.uint8))
            return image.convert("RGB")
    except Exception:
        return None


def assert_faithful(source: Path, stored: dict[str, dict], rejected: dict[str, str]) -> None:
    """No input Pillow decodes fully is rejected; none it cannot is stored (as a partial
    picture); each stored one has the input's upright size and its colours within what a
    plain JPEG round trip of the input loses."""
    for relpath, reason in rejected.items():
        assert reference(source / relpath) is None, f"{relpath} rejected: {reason}"
    for relpath, kept in stored.items():
        want = reference(source / relpath)
        assert want is not None, f"{relpath}: Pillow cannot decode it, yet it was stored"
        got = Image.open(io.BytesIO(kept["jpg"])).convert("RGB")
        assert got.size == want.size, f"{relpath}: stored {got.size}, upright {want.size}"
        trip = io.BytesIO()
        want.save(trip, format="JPEG", quality=95)
        loss = _mean_difference(Image.open(trip).convert("RGB"), want)
        assert _mean_difference(got, want) <= loss + 2, relpath


def _mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


def test_every_odd_file_is_a_sample_that_dali_decodes_or_a_reject_with_its_reason(tmp_path):
    ghostscript = shutil.which("gs") is not None
    odd = odd_files(ghostscript)
    added = imagenet_tree(tmp_path / "imagenet", {n: data for n, (data, _) in odd.items()})
    expected_rejects = sum(what != SAMPLE for _, what in odd.values())
    shard_and_verify(tmp_path / "imagenet", tmp_path / "shards", expected_rejects)
    stored, rejected = accounted(tmp_path / "shards", tmp_path / "imagenet")

    for relpath, name in added.items():
        what = odd[name][1]
        if what == SAMPLE:
            assert relpath in stored, f"{name} rejected: {rejected.get(relpath)}"
        else:
            assert what in rejected.get(relpath, ""), f"{name}: {rejected.get(relpath)}"
    by_name = {name: stored[relpath] for relpath, name in added.items() if relpath in stored}
    for name in ("stray_ff00", "bytes_between_segments", "truncated_app14"):
        assert any(c.startswith("jpeg_structure_") for c in by_name[name]["meta"]["conversions"])

    # Orientation outside EXIF is applied, as ImageOps.exif_transpose shows it.
    xmp = by_name["xmp_orientation_6"]["meta"]
    assert "exif_orientation_6" in xmp["conversions"] and (xmp["width"], xmp["height"]) == \
        (20, 40)
    magick = by_name["imagemagick_orientation_3"]
    assert "exif_orientation_3" in magick["meta"]["conversions"]
    turned = np.asarray(Image.open(io.BytesIO(magick["jpg"])))
    assert turned[15, 30].mean() > 200 and turned[5, 10].mean() < 50  # white now bottom-right

    sizes = dali_sizes({k: s["jpg"] for k, s in stored.items()})
    assert {k: sizes[k] for k in stored} == \
        {k: (s["meta"]["height"], s["meta"]["width"]) for k, s in stored.items()}
    assert_faithful(tmp_path / "imagenet", stored, rejected)


def pinned_corpus() -> tuple[Path, dict[str, str]]:
    """The folder PILLOW_TEST_IMAGES names and its files whose sha256 matches the pin."""
    pin = json.loads(PIN.read_text())
    where = os.environ.get("PILLOW_TEST_IMAGES")
    if not where:
        pytest.skip(f"PILLOW_TEST_IMAGES is not set: for the {len(pin['files'])}-file corpus, "
                    f"clone {pin['repository']}, check out {pin['commit']} and point it at "
                    f"{pin['folder']}")
    root = Path(where)
    found = {}
    for relpath, digest in pin["files"].items():
        path = root / relpath
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
            found[relpath] = digest
    if len(found) < 0.9 * len(pin["files"]):
        pytest.skip(f"{root}: {len(found)} of the {len(pin['files'])} pinned files match; check "
                    f"out {pin['commit']} of {pin['repository']}")
    return root, found


def test_pillows_own_test_images_all_go_through(tmp_path):
    root, files = pinned_corpus()
    data = {relpath: (root / relpath).read_bytes() for relpath in files}
    added = imagenet_tree(tmp_path / "imagenet", data)
    shard_and_verify(tmp_path / "imagenet", tmp_path / "shards", len(added))
    stored, rejected = accounted(tmp_path / "shards", tmp_path / "imagenet")
    assert all(reason.strip() for reason in rejected.values())
    assert len(stored) > len(added) // 2, f"only {len(stored)} of {len(added)} stored"
    assert_faithful(tmp_path / "imagenet", stored, rejected)
