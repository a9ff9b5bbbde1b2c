"""The GPU check's figures beside their targets, from the JSON each phase wrote.

    python bench/gpu_summary.py OUT        # also the last thing bench/gpu_check.sh prints
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FLOOR, GOAL, END_TO_END = 8000, 12000, 0.95


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summary(out: Path) -> list[str]:
    lines = []
    for phase in ("torch", "dali"):
        steps = [json.loads(line) for line in (out / phase / "steps.jsonl").read_text()
                 .splitlines()] if (out / phase / "steps.jsonl").is_file() else []
        for s in steps:
            lines.append(f"{phase}/{s['step']}: {'ok' if s['status'] == 0 else 'FAILED'} "
                         f"({s['seconds']:.0f} s)")
    facts = _read(out / "torch" / "facts.json")
    if facts:
        lines.append(f"device: {facts.get('gpu') or 'CPU (dry run)'}, torch {facts['torch']}, "
                     f"CUDA {facts['cuda']}, DALI {facts.get('dali')}")
    synthetic = _read(out / "torch" / "synthetic.json")
    if synthetic:
        for r in synthetic["rows"]:
            peak = "" if r["peak_gib"] is None else f", peak {r['peak_gib']:.1f} GiB"
            lines.append(f"synthetic batch {r['batch']}, compile {'on' if r['compile'] else 'off'}"
                         f": {r['img_per_s']:.0f} img/s{peak}")
        best = synthetic["best"]
        lines.append(f"best synthetic {best:.0f} img/s: target >= {FLOOR} (floor) -> "
                     f"{'met' if best >= FLOOR else 'missed'}, {GOAL} (goal) -> "
                     f"{'met' if best >= GOAL else 'missed'}")
    decode = _read(out / "dali" / "decode.json")
    if decode:
        for r in decode["rows"]:
            lines.append(f"decode + crop, {r['shards']} shards, hw_decoder_load "
                         f"{r['hw_decoder_load']:.2f}: {r['img_per_s']:.0f} img/s")
    end = _read(out / "dali" / "end_to_end.json")
    if end:
        lines.append(f"end to end {end['shards']:.0f} img/s vs synthetic {end['synthetic']:.0f}"
                     f" in the same run: {end['ratio']:.2f}x, target >= {END_TO_END} -> "
                     f"{'met' if end['ratio'] >= END_TO_END else 'missed'}")
    return lines or [f"nothing measured yet in {out}"]


def main() -> None:
    print("\n".join(["== summary", *summary(Path(sys.argv[1]))]))


if __name__ == "__main__":
    main()
