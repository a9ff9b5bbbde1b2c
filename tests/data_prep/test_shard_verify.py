"""`shard.py --verify` re-reads the shards and finds what is wrong with them."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile

import pytest
from shard_helpers import run_shard
from wds2idx import IndexCreator

from data_prep.verify import verify_output


@pytest.fixture()
def copy(sharded, tmp_path):
    shutil.copytree(sharded, tmp_path / "out")
    return tmp_path / "out"


def test_verify_passes_on_written_shards(sharded):
    result = run_shard("--verify", sharded, "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: all shards check out" in result.stdout
    assert "train/train-000000.tar: 10 samples" in result.stdout


def test_verify_reports_a_damaged_shard(copy):
    shard = copy / "train" / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_shard("--verify", copy, "--workers", "1")
    assert result.returncode == 1
    assert "train-000001.tar: missing or checksum differs from manifest" in result.stdout


def test_verify_reports_an_index_that_does_not_match_the_tar(copy):
    index = copy / "val" / "val-000000.idx"
    header, first, *rest = index.read_text().splitlines(keepends=True)
    fields = first.split(" ")
    fields[1] = str(int(fields[1]) + 512)  # the first file's offset now points elsewhere
    index.write_text("".join([header, " ".join(fields), *rest]))
    manifest_path = copy / "val" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["index_sha256"] = hashlib.sha256(index.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    result = run_shard("--verify", copy, "--workers", "1")
    assert result.returncode == 1
    assert "val-000000.idx: differs from wds2idx's index" in result.stdout


def test_verify_of_a_folder_without_shards(tmp_path):
    (tmp_path / "classes.json").write_text("[]")
    result = run_shard("--verify", tmp_path)
    assert result.returncode == 2 and "holds no <split>/manifest.json" in result.stderr


def test_verify_reads_the_index_as_dali_does(copy, capsys):
    """A key with a space: wds2idx writes the same index, DALI misreads it; verify says so."""
    tar, index = copy / "val" / "val-000000.tar", copy / "val" / "val-000000.idx"
    key = None

    def spaced(member, data):
        nonlocal key
        key = key or member.name.split(".")[0]
        member.name = member.name.replace(key, key.replace("_", " "))
        return data

    rewrite_shard(copy / "val", tar, index, spaced)
    assert verify_output(copy, workers=1) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if "PROBLEM" in line]
    assert problems == [f"PROBLEM {index}: DALI cannot read it: line 1: 18 fields, not 'ext "
                        "offset size name' groups of four (a space in a file name?)"]


def test_verify_applies_the_trainers_checks_of_the_listing(copy, capsys):
    shutil.copy(copy / "val" / "val-000000.tar", copy / "val" / "val-000099.tar")
    assert verify_output(copy, workers=1) == 1
    assert f"PROBLEM the trainer refuses {copy / 'val'}: {copy / 'val'} holds shards the " \
           "manifest does not list: val-000099.tar" in capsys.readouterr().out


def rewrite_shard(split_dir, tar, index, change) -> None:
    """Each member through change(member, data) -> data, then a fresh index and manifest."""
    with tarfile.open(tar) as old:
        members = [(m, old.extractfile(m).read()) for m in old]
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as new:
        for member, data in members:
            data = change(member, data)
            new.addfile(member, io.BytesIO(data))
    with IndexCreator(str(tar), str(index), verbose=False) as creator:
        creator.create_index()
    rewrite_manifest(split_dir, tar, index)


def rewrite_manifest(split_dir, tar, index) -> None:
    """The manifest made to agree with a hand-changed shard, so only its content is wrong."""
    path = split_dir / "manifest.json"
    data = json.loads(path.read_text())
    entry = next(s for s in data["shards"] if s["name"] == tar.name)
    entry.update(sha256=hashlib.sha256(tar.read_bytes()).hexdigest(), bytes=tar.stat().st_size,
                 index_sha256=hashlib.sha256(index.read_bytes()).hexdigest())
    path.write_text(json.dumps(data))


def test_verify_decodes_with_dalis_decoder_what_pillow_accepts(copy, capsys):
    """A stored JPEG with a stray FF 00 before a marker: Pillow decodes it, DALI's decoder
    (the trainer's) refuses it; --verify names the sample."""
    tar, index = copy / "val" / "val-000000.tar", copy / "val" / "val-000000.idx"
    changed = []

    def stray_ff00(member, data):
        if member.name.endswith(".jpg") and not changed:
            changed.append(member.name.rsplit(".", 1)[0])
            data = data[:2] + b"\xff\x00" + data[2:]
            member.size = len(data)
        return data

    rewrite_shard(copy / "val", tar, index, stray_ff00)
    assert verify_output(copy, workers=1) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if "PROBLEM" in line]
    key = changed[0]
    assert len(problems) == 1 and f"{tar} sample {key}: DALI's decoder refuses it" in \
        problems[0], problems
