"""environment.yml (cluster users) and pyproject.toml (pip, CI) name the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _conda_pip_requirements() -> list[str]:
    conda = yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]
    pip_section = next(d["pip"] for d in conda if isinstance(d, dict) and "pip" in d)
    return [r for r in pip_section if not r.startswith("-")]


def test_environment_yml_and_pyproject_name_the_same_packages():
    declared = _project()["dependencies"] + _project()["optional-dependencies"]["dev"]
    assert {_name(r) for r in _conda_pip_requirements()} == {_name(r) for r in declared}


def test_pinned_versions_agree():
    declared = {_name(r): r.replace(" ", "") for r in _project()["dependencies"]}
    for requirement in _conda_pip_requirements():
        name = _name(requirement)
        if name in declared:
            assert requirement.replace(" ", "") == declared[name], name
