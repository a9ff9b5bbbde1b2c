"""`shard.py --verify` re-reads the shards and finds what is wrong with them."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from shard_helpers import run_shard


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
    result = run_shard("--verify", copy)
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
    result = run_shard("--verify", copy)
    assert result.returncode == 1
    assert "val-000000.idx: differs from wds2idx's index" in result.stdout


def test_verify_of_a_folder_without_shards(tmp_path):
    (tmp_path / "classes.json").write_text("[]")
    result = run_shard("--verify", tmp_path)
    assert result.returncode == 2 and "holds no <split>/manifest.json" in result.stderr
