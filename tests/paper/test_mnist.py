"""The MNIST experiment (pipeline/paper/mnist.py): a reduced run on the digits, the IDX
reader, the --idx path end to end on tiny files, and the errors a person sees."""

from __future__ import annotations

import gzip
import json
import struct
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.paper import __main__ as paper_cli
from pipeline.paper import mnist, mnist_data
from pipeline.paper.idx import IMAGES, LABELS, IdxError, read_idx

REDUCED = ["--steps", "300", "--every", "50"]


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file written by hand (not by the code under test): header, then big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_mnist(folder, train: int = 120, test: int = 20, size: int = 4, gz: bool = True):
    """The four MNIST files with random pixels and labels; the train images gzipped if gz."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        name = f"{prefix}-images-idx3-ubyte"
        if gz and prefix == "train":
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(images)))
        else:
            (folder / name).write_bytes(idx_bytes(images))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return folder


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("mnist")
    assert paper_cli.main(["mnist", *REDUCED, "--out", str(out)]) == 0
    return out, json.loads((out / "mnist.json").read_text())


def test_reduced_run_records_exactly_the_steps_asked_for(reduced_run):
    _, result = reduced_run
    expected = [0, 50, 100, 150, 200, 250, 300]
    assert result["record_steps"] == expected
    assert set(result["curves"]) == {"without_bn", "with_bn"}
    for curve in result["curves"].values():
        assert curve["step"] == expected
        assert all(len(curve[key]) == len(expected) for key in mnist.CURVE_KEYS)
    assert result["settings"]["steps"] == 300 and result["settings"]["batch"] == 60
    assert result["data"]["test_images"] == 540  # 30% of the 1,797 digits


def test_percentiles_are_ordered_at_every_point(reduced_run):
    for curve in reduced_run[1]["curves"].values():
        for p15, p50, p85 in zip(curve["p15"], curve["p50"], curve["p85"], strict=True):
            assert p15 <= p50 <= p85


def test_bn_trains_faster_and_its_sigmoid_input_drifts_less(reduced_run):
    # At 300 steps this holds for each of seeds 0-9 with a wide margin (no BN: still near
    # chance, drift 0.6-2.1; BN: above 95%, drift at most 0.35); seed 0 is the one run here.
    summary = reduced_run[1]["summary"]
    plain, bn = summary["without_bn"], summary["with_bn"]
    assert bn["final_accuracy"] >= plain["final_accuracy"]
    assert bn["final_accuracy"] > 0.9
    assert bn["median_range"] < plain["median_range"]


def test_outputs_are_valid_images_and_a_table(reduced_run):
    out, result = reduced_run
    for name in ("fig1a_test_accuracy.png", "fig1bc_sigmoid_input.png"):
        path = out / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300
    table = (out / "mnist.md").read_text()
    assert "| final test accuracy (step 300) |" in table
    assert all(claim["verdict"] in table for claim in result["claims"])


def test_both_nets_start_from_the_same_weights():
    s = mnist.Settings(steps=1, every=1)
    plain, bn = mnist.build_net(64, False, s), mnist.build_net(64, True, s)
    weights = [(m.linear if isinstance(m, mnist.Hidden) else m).weight
               for net in (plain, bn) for m in (*net.hidden, net.head)]
    for a, b in zip(weights[:4], weights[4:], strict=True):
        assert torch.equal(a, b)
    assert 0.09 < weights[0].std().item() < 0.11


def test_record_steps_end_at_the_last_step():
    assert mnist.record_steps(mnist.Settings(steps=120, every=50)) == [0, 50, 100, 120]


@pytest.mark.parametrize("code,values", [
    (0x08, np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
    (0x09, np.array([-128, 0, 127], dtype=np.int8)),
    (0x0B, np.array([[-300, 2], [3, 30000]], dtype=np.int16)),
    (0x0C, np.array([-(2**31), 7, 2**31 - 1], dtype=np.int32)),
    (0x0D, np.array([0.5, -1.25], dtype=np.float32)),
    (0x0E, np.array([[1e-300], [3.5]], dtype=np.float64)),
])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_read_back_exactly(tmp_path, code, values, gz):
    data = idx_bytes(values, code)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    read = read_idx(path)
    assert read.shape == values.shape and read.dtype == values.dtype
    assert np.array_equal(read, values)


@pytest.mark.parametrize("corrupt,expected", [
    (lambda d: b"\x01" + d[1:], "is not IDX"),  # first byte must be 0
    (lambda d: d[:2] + b"\x07" + d[3:], "is not IDX"),  # unknown type code
    (lambda d: d[:-1], "truncated or padded"),
    (lambda d: d + b"\0", "truncated or padded"),
    (lambda d: d[:6], "too short for the header"),
    (lambda d: d[:3], "too short for an IDX header"),
])
def test_corrupt_idx_files_are_errors_naming_the_file(tmp_path, corrupt, expected):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(idx_bytes(np.zeros((2, 3, 3), np.uint8))))
    with pytest.raises(IdxError, match=expected) as err:
        read_idx(path, IMAGES)
    assert str(path) in str(err.value)


def test_a_labels_file_where_images_belong_is_named(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(IdxError, match="0x00000801, expected 0x00000803") as err:
        read_idx(path, IMAGES)
    assert str(path) in str(err.value)
    assert read_idx(path, LABELS).shape == (5,)


def test_a_gz_name_that_is_not_gzip_is_named(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(IdxError, match="not a readable gzip file") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_idx_folder_loads_scaled_to_unit_range(tmp_path):
    data = mnist_data.load_idx_dir(write_mnist(tmp_path))
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz", IMAGES)
    assert data.image_shape == (4, 4) and data.train.x.shape == (120, 16)
    assert data.test.x.shape == (20, 16) and data.test.y.dtype == torch.int64
    assert torch.equal(data.train.x, torch.from_numpy(raw.reshape(120, 16) / 255).float())


def test_idx_folder_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(mnist_data.DataError, match="neither train-images-idx3-ubyte nor"):
        mnist_data.load_idx_dir(tmp_path)
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(mnist_data.DataError, match="19 labels for the 20 images") as err:
        mnist_data.load_idx_dir(tmp_path)
    assert str(labels) in str(err.value)
    labels.write_bytes(idx_bytes(np.full(20, 10, np.uint8)))
    with pytest.raises(mnist_data.DataError, match="label 10 outside 0-9"):
        mnist_data.load_idx_dir(tmp_path)


def test_idx_run_end_to_end(tmp_path):
    out = tmp_path / "out"
    argv = ["--idx", str(write_mnist(tmp_path)), "--steps", "20", "--every", "10"]
    assert paper_cli.main(["mnist", *argv, "--out", str(out)]) == 0
    result = json.loads((out / "mnist.json").read_text())
    assert result["curves"]["with_bn"]["step"] == [0, 10, 20]
    assert result["data"]["test_split"] == "the t10k files"


def test_a_corrupt_idx_file_stops_the_run_with_one_line(tmp_path, capsys):
    write_mnist(tmp_path, gz=False)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x07" + bad.read_bytes()[4:])
    out = str(tmp_path / "out")
    assert paper_cli.main(["mnist", "--idx", str(tmp_path), "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and "expected 0x00000803" in err


def test_without_scikit_learn_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # importing them now raises ImportError
    assert paper_cli.main(["mnist", "--steps", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install -e .[paper]" in err and "--idx" in err


def test_the_cli_names_a_missing_command_module(monkeypatch, capsys):
    monkeypatch.setitem(paper_cli.COMMANDS, "variants", "pipeline.paper.not_written_yet")
    assert paper_cli.main(["variants"]) == 2
    assert "pipeline/paper/not_written_yet.py is missing" in capsys.readouterr().err
    assert paper_cli.main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err
