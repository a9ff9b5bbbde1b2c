"""The README's first command, shortened to half an epoch of training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline import demo
from pipeline.training.checkpoint import validate

REPO = Path(__file__).resolve().parents[1]


def test_demo_generates_shards_verifies_and_trains(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipeline.demo", "--out", str(tmp_path / "demo"),
                           "--epochs", "0.5"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verify: all shards check out" in done.stdout
    assert "done: val top-1" in done.stdout and "on 100 images" in done.stdout
    checkpoint = tmp_path / "demo" / "runs" / "smoke_cpu" / "checkpoints" / "step-00000012"
    assert validate(checkpoint) is None  # every file there, matching its sha256


def test_the_demo_never_deletes_what_it_did_not_make(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("a user's file")
    assert demo.main(["--out", str(tmp_path)]) == 2
    assert mine.read_text() == "a user's file" and sorted(tmp_path.iterdir()) == [mine]

    out = tmp_path / "demo"  # a user's folder of the same shape: runs/ and shards/ of theirs
    for part in ("runs/my_experiment", "shards"):
        (out / part).mkdir(parents=True)
        (out / part / "theirs").write_text("")
    assert "holds files that the demo did not make" in demo.claim(out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "runs", "runs/my_experiment", "runs/my_experiment/theirs", "shards", "shards/theirs"]

    ours = tmp_path / "ours"  # the demo's own folder from an earlier run: only its parts go
    assert demo.claim(ours) is None  # new: made and marked
    for part in demo.PARTS:
        (ours / part).mkdir()
        (ours / part / "old").write_text("")
    (ours / "kept.txt").write_text("added by the user")
    assert demo.claim(ours) is None
    assert sorted(p.name for p in ours.iterdir()) == [demo.MARK, "kept.txt"]
