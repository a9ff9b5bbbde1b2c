"""Checkpoint folders: validation against meta.json, and what pruning keeps."""

from __future__ import annotations

import json

from pipeline.training.checkpoint import _publish, prune, validate


def make(root, step: int, top1: float | None = None):
    tmp = root / f"step-{step:08d}.partial"
    tmp.mkdir(parents=True)
    (tmp / "engine.pt").write_bytes(bytes(range(256)) * step)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "part.pt").write_bytes(b"x" * step)
    _publish(tmp, root / f"step-{step:08d}", {"step": step, "top1": top1})
    return root / f"step-{step:08d}"


def test_a_published_checkpoint_validates_and_damage_is_named(tmp_path):
    folder = make(tmp_path, 3)
    assert not (tmp_path / "step-00000003.partial").exists()
    assert validate(folder) is None
    assert set(json.loads((folder / "meta.json").read_text())["files"]) == {
        "engine.pt", "sub/part.pt"}
    (folder / "sub" / "part.pt").write_bytes(b"y" * 3)
    assert validate(folder) == "sub/part.pt does not match its sha256"
    (folder / "engine.pt").write_bytes(b"short")
    assert validate(folder) == "engine.pt has 5 bytes, meta.json says 768"
    (folder / "meta.json").unlink()
    assert validate(folder) == "meta.json is missing or unreadable"


def test_pruning_keeps_the_newest_and_the_best(tmp_path):
    for step, top1 in [(1, 0.2), (2, 0.6), (3, None), (4, 0.4), (5, None)]:
        make(tmp_path, step, top1)
    kept = prune(tmp_path, keep_last=2)
    assert [f.name for f in kept] == ["step-00000002", "step-00000004", "step-00000005"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name for f in kept]
