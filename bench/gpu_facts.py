"""What the GPU check ran on: the GPU, its driver and memory (nvidia-smi), torch, CUDA,
cuDNN, NCCL and DALI versions, as JSON.

    python bench/gpu_facts.py --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
from pathlib import Path

import torch

QUERY = "name,driver_version,memory.total,power.limit,clocks.max.sm"


def facts() -> dict:
    found = {"python": platform.python_version(), "torch": torch.__version__,
             "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        found.update(gpu=torch.cuda.get_device_name(0), cudnn=torch.backends.cudnn.version(),
                     nccl=".".join(map(str, torch.cuda.nccl.version())),
                     capability=".".join(map(str, torch.cuda.get_device_capability(0))))
    if shutil.which("nvidia-smi"):
        shown = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
        found["nvidia_smi"] = dict(zip(QUERY.split(","), shown.stdout.strip().split(", "),
                                       strict=False))
    try:
        import nvidia.dali
        found["dali"] = nvidia.dali.__version__
    except ImportError:
        found["dali"] = None
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    found = facts()
    print(json.dumps(found, indent=1))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
