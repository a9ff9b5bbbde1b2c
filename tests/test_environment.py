"""environment.yml (cluster users) and pyproject.toml (pip, CI) name the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _family(requirement: str) -> str:
    """DALI's CUDA variants are one package: cuda120 here (CPU pipelines), the cluster's
    paired to its torch build."""
    return re.sub(r"^nvidia-dali-cuda\d+$", "nvidia-dali", _name(requirement))


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _conda_pip_requirements() -> list[str]:
    conda = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    pip_section = next(d["pip"] for d in conda if isinstance(d, dict) and "pip" in d)
    return [r for r in pip_section if not r.startswith("-")]


def test_environment_yml_and_pyproject_name_the_same_packages():
    declared = _project()["dependencies"] + _project()["optional-dependencies"]["dev"]
    assert {_family(r) for r in _conda_pip_requirements()} == {_family(r) for r in declared}


def test_dali_is_built_for_the_cuda_of_the_cluster_torch():
    """PyPI's torch 2.13.0 asks for cuda-toolkit 13.0.3 (read with `pip install --dry-run
    --report`): its DALI is the cuda130 build, and no extra index silently loses to PyPI."""
    pip = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"][-1]["pip"]
    assert "torch==2.13.0" in pip
    assert [r for r in pip if _family(r) == "nvidia-dali"] == ["nvidia-dali-cuda130>=2.4"]
    assert not [r for r in pip if r.startswith("--extra-index-url")]


def test_pinned_versions_agree():
    declared = {_name(r): r.replace(" ", "") for r in _project()["dependencies"]}
    declared["nvidia-dali-cuda130"] = declared["nvidia-dali-cuda120"].replace("120", "130")
    for requirement in _conda_pip_requirements():
        name = _name(requirement)
        if name in declared:
            assert requirement.replace(" ", "") == declared[name], name
