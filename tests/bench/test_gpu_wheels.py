"""The carry route to the GPU machine (bench/gpu_wheels.py): parts rejoin byte for byte, a
damaged or missing part is named, and DALI's wheel keeps only the backends it needs."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import gpu_wheels  # noqa: E402


def test_parts_rejoin_into_the_same_wheels_and_damage_is_named(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    made = {}
    for name, size in (("a-1.0-py3-none-any.whl", 700_000), ("b-2.0-py3-none-any.whl", 90_000)):
        data = os.urandom(size)  # incompressible: the parts are as large as the data
        (wheels / name).write_bytes(data)
        made[name] = hashlib.sha256(data).hexdigest()
    parts = gpu_wheels.pack(wheels, part_bytes=256 * 1024)
    assert [p.name for p in parts] == ["part-1", "part-2", "part-3", "part-4"]
    assert all(p.stat().st_size == 256 * 1024 for p in parts[:-1])
    out = gpu_wheels.join(wheels / "parts", tmp_path / "joined")
    assert {w.name: hashlib.sha256(w.read_bytes()).hexdigest() for w in out} == made

    good = parts[1].read_bytes()
    damaged = bytearray(good)
    damaged[100] ^= 1
    parts[1].write_bytes(bytes(damaged))
    with pytest.raises(SystemExit, match="part-2: sha256 differs from SHA256SUMS"):
        gpu_wheels.join(wheels / "parts", tmp_path / "again")
    parts[1].write_bytes(good)
    parts[2].unlink()
    with pytest.raises(SystemExit, match="part-3 is missing"):
        gpu_wheels.join(wheels / "parts", tmp_path / "again")


def test_dalis_wheel_keeps_the_backends_of_python_3_11_and_3_12(tmp_path):
    wheel = tmp_path / "nvidia_dali_cuda130-2.4.0-py3-none-manylinux_2_28_x86_64.whl"
    files = {"nvidia/dali/libdali.so": b"shared" * 100,
             **{f"nvidia/dali/backend_impl.cpython-3{v}-x86_64-linux-gnu.so": b"x" * v
                for v in (10, 11, 12, 13, 14)},
             "nvidia/dali/python/python3.10/x.py": b"old"}
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("nvidia_dali_cuda130-2.4.0.dist-info/RECORD", "stale\n")
    gpu_wheels.repack_dali(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert names == {"nvidia/dali/libdali.so",
                         "nvidia/dali/backend_impl.cpython-311-x86_64-linux-gnu.so",
                         "nvidia/dali/backend_impl.cpython-312-x86_64-linux-gnu.so",
                         "nvidia_dali_cuda130-2.4.0.dist-info/RECORD"}
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        record = z.read("nvidia_dali_cuda130-2.4.0.dist-info/RECORD").decode().splitlines()
        digest = base64.urlsafe_b64encode(hashlib.sha256(b"shared" * 100).digest())
        assert f"nvidia/dali/libdali.so,sha256={digest.rstrip(b'=').decode()},600" in record


def test_install_unpacks_wheels_as_pip_would_and_the_calls_carry_every_part(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "tiny-1.0-py3-none-any.whl", "w") as z:
        z.writestr("tiny/__init__.py", "VALUE = 7\n")
        z.writestr("tiny-1.0.data/purelib/tiny_extra.py", "EXTRA = 8\n")
        z.writestr("tiny-1.0.data/scripts/tool", "#!/bin/sh\n")
        z.writestr("tiny-1.0.dist-info/METADATA", "Name: tiny\n")
    assert gpu_wheels.install(wheels, tmp_path / "site") == ["tiny-1.0-py3-none-any.whl"]
    site = tmp_path / "site"
    assert (site / "tiny" / "__init__.py").read_text() == "VALUE = 7\n"
    assert (site / "tiny_extra.py").is_file() and not list(site.rglob("tool"))

    calls = gpu_wheels.calls(["part-1", "part-2", "part-3", "part-4"])
    assert [c["carry"][0] for c in calls] == [f".gpu-wheels/parts/part-{n}" for n in range(1, 5)]
    assert ".gpu-wheels/parts/small.tar" in calls[0]["carry"]
    assert "gpu_check.sh torch" in calls[0]["command"]
    assert "gpu_wheels.py join /tmp/gpu-parts" in calls[-1]["command"]
    assert "gpu_check.sh dali" in calls[-1]["command"]
    assert all(len(c["command"]) < 2000 and len(c["carry"]) <= 8 for c in calls)
