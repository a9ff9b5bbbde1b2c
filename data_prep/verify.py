"""Re-reads every written shard with independent readers and checks it against the manifest.

Checks per shard: tar and index checksums; the index read by DALI's rules
(`dali_index.parse_index`) and equal to the one DALI's own `wds2idx` builds from the tar;
the sample count read back by webdataset; every key free of dots; `.cls` equal to the
label of the `.json` wnid; every JPEG decodes to RGB with no EXIF orientation to apply,
with Pillow and with DALI's CPU decoder (the trainer's), to the size its `.json` gives.
Per split: class totals equal the manifest's, and the trainer's own checks of the folder
(`data_prep.manifest.load_split`: no unlisted shards, sizes, counts) pass.
Prints each shard's class mix.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import webdataset as wds
from PIL import Image

from data_prep.dali_decode import dali_sizes
from data_prep.dali_index import MalformedIndex, index_text, parse_index
from data_prep.images import ORIENTATION
from data_prep.manifest import ShardError, load_split, read_manifest
from data_prep.runner import worker_pool
from pipeline.files import file_sha256


def verify_output(out: Path, workers: int) -> int:
    labels = {row["wnid"]: row["index"] for row in json.loads((out / "classes.json").read_text())}
    splits = [d for d in sorted(out.iterdir()) if (d / "manifest.json").is_file()]
    if not splits:
        raise FileNotFoundError(f"{out} holds no <split>/manifest.json to verify")
    problems = 0
    for split_dir in splits:
        problems += _verify_split(split_dir, labels, workers)
    print("verify: all shards check out" if not problems else f"verify: {problems} problems")
    return 1 if problems else 0


def _verify_split(split_dir: Path, labels: dict[str, int], workers: int) -> int:
    manifest = read_manifest(split_dir)
    jobs = [(split_dir, shard, labels) for shard in manifest["shards"]]
    if workers > 1:
        with worker_pool(workers) as pool:
            results = pool.map(verify_shard, jobs)
    else:  # no pool: it would only add an interpreter start
        results = list(map(verify_shard, jobs))
    problems, totals = _trainer_problems(split_dir), Counter()
    for shard, (shard_problems, counts) in zip(manifest["shards"], results, strict=True):
        problems += shard_problems
        totals.update(counts)
        print(f"{split_dir.name}/{shard['name']}: {_class_mix(counts)}")
    if dict(sorted(totals.items())) != manifest["class_counts"]:
        problems.append(f"{split_dir.name}: class totals differ from manifest.json")
    for problem in problems:
        print(f"PROBLEM {problem}")
    print(f"{split_dir.name}: {sum(totals.values())} samples in {len(results)} shards, "
          f"{len(problems)} problems")
    return len(problems)


def verify_shard(job) -> tuple[list[str], Counter]:
    split_dir, shard, labels = job
    tar, problems = split_dir / shard["name"], []
    if file_sha256(tar) != shard["sha256"]:
        return [f"{tar}: missing or checksum differs from manifest"], Counter()
    index = split_dir / shard["index"]
    if file_sha256(index) != shard["index_sha256"]:
        problems.append(f"{index}: missing or checksum differs")
    else:
        problems += _index_problems(index, tar)
    counts: Counter = Counter()
    stored: dict[str, tuple[bytes, tuple[int, int]]] = {}  # key -> (JPEG, json's h x w)
    for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
        problems += _check_sample(tar, sample, labels)
        meta = json.loads(sample["json"])
        counts[meta["wnid"]] += 1
        stored[sample["__key__"]] = (sample["jpg"], (meta.get("height"), meta.get("width")))
    problems += _dali_problems(tar, stored)
    if sum(counts.values()) != shard["samples"]:
        problems.append(f"{tar}: {sum(counts.values())} samples, manifest says {shard['samples']}")
    return problems, counts


def _check_sample(tar: Path, sample: dict, labels: dict[str, int]) -> list[str]:
    key, where = sample["__key__"], f"{tar} sample {sample['__key__']}"
    if "." in key or not {"jpg", "cls", "json"} <= sample.keys():
        return [f"{where}: key has a dot or a file is missing ({sorted(sample)})"]
    wnid = json.loads(sample["json"])["wnid"]
    if int(sample["cls"]) != labels.get(wnid):
        return [f"{where}: .cls {int(sample['cls'])} but {wnid} is class {labels.get(wnid)}"]
    try:
        image = Image.open(io.BytesIO(sample["jpg"]))
        image.load()
    except Exception as exc:  # Pillow's errors are of many types
        return [f"{where}: JPEG does not decode ({type(exc).__name__}: {exc})"]
    if image.format != "JPEG" or image.mode != "RGB":
        return [f"{where}: stored as {image.format} {image.mode}, expected JPEG RGB"]
    meta = json.loads(sample["json"])
    if image.size != (meta.get("width"), meta.get("height")):
        return [f"{where}: decodes to {image.size[0]}x{image.size[1]}, its .json says "
                f"{meta.get('width')}x{meta.get('height')}"]
    if image.getexif().get(ORIENTATION, 1) != 1:
        return [f"{where}: has EXIF orientation {image.getexif()[ORIENTATION]}, which DALI "
                "applies and the webdataset backend does not; rerun data_prep/shard.py"]
    return []


def _dali_problems(tar: Path, stored: dict[str, tuple[bytes, tuple[int, int]]]) -> list[str]:
    found = dali_sizes({key: jpg for key, (jpg, _) in stored.items()})
    problems = []
    for key, (_, size) in stored.items():
        got = found[key]
        if isinstance(got, str):
            problems.append(f"{tar} sample {key}: DALI's decoder refuses it ({got}); training "
                            "would stop on it: rerun data_prep/shard.py on its source")
        elif got != size:
            problems.append(f"{tar} sample {key}: DALI decodes it to {got[1]}x{got[0]}, its "
                            f".json says {size[1]}x{size[0]}")
    return problems


def _index_problems(index: Path, tar: Path) -> list[str]:
    text = index.read_text()
    if text == index_text([]):  # every input rejected: the loaders skip this shard
        return []
    try:
        parse_index(text)
    except MalformedIndex as exc:
        return [f"{index}: DALI cannot read it: {exc}"]
    if text != _dali_index(tar):
        return [f"{index}: differs from wds2idx's index"]
    return []


def _trainer_problems(split_dir: Path) -> list[str]:
    """What the trainer would refuse (the same function, so the two cannot drift apart)."""
    try:
        load_split(split_dir.parent, split_dir.name)
    except ShardError as exc:
        return [f"the trainer refuses {split_dir}: {exc}"]
    return []


def _dali_index(tar: Path) -> str:
    from wds2idx import IndexCreator  # ships with nvidia-dali

    with tempfile.TemporaryDirectory() as tmp:
        idx = Path(tmp) / "check.idx"
        with IndexCreator(str(tar), str(idx), verbose=False) as creator:
            creator.create_index()
        return idx.read_text()


def _class_mix(counts: Counter) -> str:
    total = sum(counts.values())
    if not total:
        return "empty"
    wnid, top = counts.most_common(1)[0]
    return f"{total} samples, {len(counts)} classes, largest {wnid} {top / total:.0%}"
