"""The wheels the GPU check needs on a machine that reaches no registry, and the parts they
travel in (at most 54 MiB each, one per call to the GPU machine; docs/gpu-check.md).

    python bench/gpu_wheels.py download .gpu-wheels     # here: cp312 wheels, repacked DALI
    python bench/gpu_wheels.py check .gpu-wheels        # resolves them offline for cp312
    python bench/gpu_wheels.py pack .gpu-wheels         # -> .gpu-wheels/parts/part-N + sums
    python bench/gpu_wheels.py join PARTS_DIR WHEELS    # there: checks, rejoins, unpacks
    python bench/gpu_wheels.py install WHEELS SITE      # there: pip install --target's job

The GPU machine has Python 3.12 and torch 2.11 (CUDA 13) with numpy, Pillow, PyYAML and
pytest, but not DALI, webdataset or OmegaConf. DALI for CUDA 13 is one py3-none wheel of
~190 MB whose native backends cover eight Python versions: `download` keeps those of 3.12
(the GPU machine) and 3.11 (this machine, for the rehearsal) and stores the repacked
wheel uncompressed, so that `pack`'s xz does the compressing: a tar of the large NVIDIA
wheels, xz'd and cut into parts with a sha256 each and one of the whole, the small ones in
small.tar, and parts/CALLS.md: every call to the GPU machine, its command and what it
carries. `join` and `install` need only the standard library. The folder is git-ignored
(.gpu-wheels/).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import lzma
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# What the GPU phases import that the GPU machine lacks; pip adds their dependencies.
NEEDED = ["nvidia-dali-cuda130==2.4.0", "webdataset>=1.0", "omegaconf>=2.4", "simplejpeg>=1.8"]
# The large NVIDIA wheels travel xz'd in parts; the rest (a few MB) in small.tar with the
# first call, since the torch phase trains through the webdataset backend and OmegaConf.
LARGE = {"nvidia-dali-cuda130", "nvidia-nvimgcodec-cu13", "nvidia-libnvcomp-cu13",
         "nvidia-nvjpeg", "nvidia-nvjpeg2k-cu13", "nvidia-nvtiff-cu13"}
# Already on the GPU machine (torch's, pytest's and matplotlib's own dependencies among
# them): not carried; numpy would shadow the machine's own build.
PRESENT = {"numpy", "pyyaml", "packaging", "typing-extensions", "pillow", "torch"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64"]
KEEP_PYTHONS = ("311", "312")
# A call carries at most 64 MiB with the work tree (~1 MB); the first also small.tar (~6 MiB)
PART_BYTES = 54 * 2**20


def _target(python: str = "3.12") -> list[str]:
    return ["--python-version", python, "--only-binary=:all:",
            *(a for p in PLATFORMS for a in ("--platform", p))]


def _canonical(name: str) -> str:
    """A project name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(wheel: Path) -> str:
    return _canonical(wheel.name.split("-")[0])


def download(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--dest", str(folder),
                    *_target(), *NEEDED], check=True)
    for wheel in folder.glob("*.whl"):
        if _project(wheel) in PRESENT:
            wheel.unlink()
    for wheel in folder.glob("nvidia_dali_cuda130-*.whl"):
        repack_dali(wheel)


def repack_dali(wheel: Path) -> None:
    """Keeps the backends of KEEP_PYTHONS only, stored (not deflated), RECORD rewritten."""
    kept = wheel.with_suffix(".kept")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(kept, "w", zipfile.ZIP_STORED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        names = [n for n in src.namelist() if n != record_name and _kept(n)]
        records = []
        for name in names:
            data = src.read(name)
            dst.writestr(name, data)
            digest = hashlib.sha256(data).digest()
            encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            records.append(f"{name},sha256={encoded},{len(data)}")
        records.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(records) + "\n")
    kept.replace(wheel)


def _kept(name: str) -> bool:
    found = re.search(r"cpython-3(\d+)", name) or re.search(r"python3\.(\d+)", name)
    return found is None or found.group(1)[:2] in {v[1:] for v in KEEP_PYTHONS}


def check(folder: Path) -> None:
    """Resolves NEEDED from `folder` alone for the GPU machine's Python; what it lacks is
    named. Packages in PRESENT come from the machine itself, so they are allowed missing."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                               "--find-links", str(folder), "--target", tmp, *_target(),
                               "--no-deps", *NEEDED], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"offline resolve failed:\n{done.stderr}")
    missing = sorted(_requirements(folder) - {_project(w) for w in folder.glob("*.whl")}
                     - PRESENT)
    if missing:
        raise SystemExit(f"{folder} lacks wheels for: {', '.join(missing)}")
    print(f"{folder}: every requirement of {', '.join(NEEDED)} is there for Python 3.12")


def _requirements(folder: Path) -> set[str]:
    """What every wheel in the folder requires on the GPU machine (markers evaluated for
    CPython 3.12 on x86_64 Linux, no extras)."""
    from packaging.requirements import Requirement  # here only; join needs none of it

    machine = {"python_version": "3.12", "python_full_version": "3.12.3", "extra": "",
               "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
               "platform_machine": "x86_64", "implementation_name": "cpython",
               "platform_python_implementation": "CPython"}
    found = set()
    for wheel in folder.glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            for line in z.read(meta).decode().splitlines():
                if line.startswith("Requires-Dist:"):
                    req = Requirement(line.split(":", 1)[1].strip())
                    if req.marker is None or req.marker.evaluate(machine):
                        found.add(_canonical(req.name))
    return found


def pack(folder: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """folder's large wheels as one tar.xz (large.tar.xz, made again only when a wheel is
    newer) cut into parts, the others in small.tar; SHA256SUMS lists every part and the
    whole. A folder without LARGE wheels (a test's) puts them all in the parts."""
    parts = folder / "parts"
    parts.mkdir(exist_ok=True)
    for old in [*parts.glob("part-*"), parts / "small.tar"]:
        old.unlink(missing_ok=True)
    wheels = sorted(folder.glob("*.whl"))
    large = [w for w in wheels if _project(w) in LARGE] or wheels
    with tarfile.open(parts / "small.tar", "w") as tar:
        for wheel in wheels:
            if wheel not in large:
                tar.add(wheel, arcname=wheel.name)
    stream = folder / "large.tar.xz"
    if not stream.is_file() or any(w.stat().st_mtime > stream.stat().st_mtime for w in large):
        partial = stream.with_suffix(".partial")
        with lzma.open(partial, "w", preset=6) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
            for wheel in large:  # xz -6 of DALI's stored wheel: about 4 min of one core
                tar.add(wheel, arcname=wheel.name)
        partial.replace(stream)
    written = []
    with open(stream, "rb") as source:
        while block := source.read(part_bytes):
            written.append(parts / f"part-{len(written) + 1}")
            written[-1].write_bytes(block)
    sums = [f"{_sha256(p)}  {p.name}" for p in written] + [f"{_sha256(stream)}  whole"]
    (parts / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    write_calls(parts, [p.name for p in written])
    print(f"{len(written)} parts in {parts}: " + ", ".join(
        f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in written))
    return written


# The calls to the GPU machine (the device tool's run: a command and the ignored paths it
# carries), written by pack into parts/CALLS.md and followed in order, back to back: what a
# call leaves in /tmp lasts only while the machine stays warm (30 s after a call).
SITE = "/tmp/gpu-site"
FIRST = ("mkdir -p /tmp/gpu-parts && cp .gpu-wheels/parts/{part} .gpu-wheels/parts/SHA256SUMS "
         "/tmp/gpu-parts/ && python3 bench/gpu_wheels.py install .gpu-wheels/parts/small.tar "
         "{site} && GPU_CHECK_SITE={site} PYTHON=python3 bash bench/gpu_check.sh torch "
         "/tmp/gpu-check; tar czf $OUT/torch.tgz -C /tmp/gpu-check torch")
MIDDLE = "cp .gpu-wheels/parts/{part} /tmp/gpu-parts/ && ls -l /tmp/gpu-parts"
LAST = ("cp .gpu-wheels/parts/{part} /tmp/gpu-parts/ && python3 bench/gpu_wheels.py join "
        "/tmp/gpu-parts /tmp/gpu-wheels && python3 bench/gpu_wheels.py install /tmp/gpu-wheels "
        "{site} && GPU_CHECK_SITE={site} PYTHON=python3 bash bench/gpu_check.sh dali "
        "/tmp/gpu-check; tar czf $OUT/dali.tgz -C /tmp/gpu-check dali; "
        "bash bench/gpu_check.sh summary /tmp/gpu-check")


def calls(part_names: list[str]) -> list[dict]:
    """Each call's command, carried paths and time limit, in order."""
    carried = [".gpu-wheels/parts/SHA256SUMS", ".gpu-wheels/parts/small.tar"]
    out = [{"command": FIRST.format(part=part_names[0], site=SITE), "timeout_s": 540,
            "carry": [f".gpu-wheels/parts/{part_names[0]}", *carried]}]
    for name in part_names[1:-1]:
        out.append({"command": MIDDLE.format(part=name), "timeout_s": 60,
                    "carry": [f".gpu-wheels/parts/{name}"]})
    last = part_names[-1] if len(part_names) > 1 else None
    out.append({"command": LAST.format(part=last or part_names[0], site=SITE),
                "timeout_s": 540, "carry": [f".gpu-wheels/parts/{last or part_names[0]}"]})
    return out


def write_calls(parts: Path, part_names: list[str]) -> Path:
    lines = ["# The calls to the GPU machine, in order and back to back (bench/gpu_wheels.py",
             "# pack wrote this; docs/gpu-check.md explains it)", ""]
    for number, call in enumerate(calls(part_names), 1):
        lines += [f"## Call {number} (timeout_s {call['timeout_s']})", "",
                  f"carry: {json.dumps(call['carry'])}", "", "```bash", call["command"],
                  "```", ""]
    path = parts / "CALLS.md"
    path.write_text("\n".join(lines))
    return path


def join(parts: Path, out: Path) -> list[Path]:
    """Checks every part and the whole against SHA256SUMS, then unpacks the wheels."""
    sums = dict(reversed(line.split("  ")) for line in
                (parts / "SHA256SUMS").read_text().splitlines())
    names = sorted((n for n in sums if n != "whole"), key=lambda n: int(n.split("-")[1]))
    whole = hashlib.sha256()
    for name in names:
        path = parts / name
        if not path.is_file():
            raise SystemExit(f"{path} is missing: carry it (docs/gpu-check.md)")
        if _sha256(path) != sums[name]:
            raise SystemExit(f"{path}: sha256 differs from SHA256SUMS; carry it again")
        whole.update(path.read_bytes())
    if whole.hexdigest() != sums["whole"]:
        raise SystemExit("the joined parts differ from what was packed")
    out.mkdir(parents=True, exist_ok=True)
    with _Joined([parts / n for n in names]) as joined, lzma.open(joined) as xz, \
            tarfile.open(fileobj=xz, mode="r|") as tar:
        tar.extractall(out, filter="data")
    wheels = sorted(out.glob("*.whl"))
    print(f"{len(wheels)} wheels in {out}")
    return wheels


class _Joined:
    """The parts read one after the other as one file."""

    def __init__(self, paths: list[Path]):
        self.paths, self.current = list(paths), None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.current:
            self.current.close()

    def read(self, size: int = -1) -> bytes:
        out = b""
        while self.paths or self.current:
            if self.current is None:
                self.current = open(self.paths.pop(0), "rb")
            data = self.current.read(size if size < 0 else size - len(out))
            out += data
            if size >= 0 and len(out) >= size:
                break
            if not data or size < 0:
                self.current.close()
                self.current = None
        return out


def install(source: Path, target: Path) -> list[str]:
    """Unpacks every wheel of `source` (a folder, or a tar of wheels) into `target`, as
    `pip install --no-deps --target` would for these wheels, with the standard library only
    (a .data folder's purelib/platlib go to the top, its scripts are left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        if source.is_file():
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
            source = Path(tmp)
        installed = []
        for wheel in sorted(source.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    parts = info.filename.split("/")
                    if parts[0].endswith(".data"):
                        if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                            continue
                        parts = parts[2:]
                    path = target.joinpath(*parts)
                    if info.is_dir():
                        path.mkdir(parents=True, exist_ok=True)
                        continue
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(z.read(info))
                    if info.external_attr >> 16 & 0o111:
                        path.chmod(0o755)
            installed.append(wheel.name)
    print(f"{len(installed)} wheels into {target}")
    return installed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/gpu_wheels.py",
                                description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("download", "check", "pack"):
        sub.add_parser(name).add_argument("folder", type=Path)
    joining = sub.add_parser("join")
    joining.add_argument("parts", type=Path)
    joining.add_argument("out", type=Path)
    installing = sub.add_parser("install")
    installing.add_argument("source", type=Path, help="a folder or a tar of wheels")
    installing.add_argument("target", type=Path)
    args = p.parse_args(argv)
    if args.command == "join":
        join(args.parts, args.out)
    elif args.command == "install":
        install(args.source, args.target)
    else:
        {"download": download, "check": check, "pack": pack}[args.command](args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
