"""The floor plan holds: imports run one way, commands sit on top, the README's Layout is
the tree, and every repository path or module a doc names exists.

Floors, lowest first (a module may import its own group and any lower floor):
    config, files  <  dist, models, data_prep  <  data  <  resolve  <  monitor  <  training
    <  reports  <  launch, paper  <  commands (python -m pipeline.<verb>, every __main__)
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "data_prep")
COMMANDS = ("train", "evaluate", "report", "upload", "preflight", "demo", "triage")
# Old spellings of moved commands: each only forwards to the new one, importing nothing.
MOVED = {"pipeline.monitor.upload": "pipeline.upload"}
FLOORS = (
    {"base": ("pipeline.config", "pipeline.files")},
    {"dist": ("pipeline.dist",), "models": ("pipeline.models",), "data_prep": ("data_prep",)},
    {"data": ("pipeline.data",)},
    {"resolve": ("pipeline.resolve",)},
    {"monitor": ("pipeline.monitor",)},
    {"training": ("pipeline.training",)},
    {"reports": ("pipeline.reports",)},
    {"launch": ("pipeline.launch",), "paper": ("pipeline.paper",)},
    {"commands": tuple(f"pipeline.{c}" for c in COMMANDS)},
)


def modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (lazy imports count)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in PACKAGES and target != name:
                edges.add(target)
    return edges


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def group_of(name: str) -> tuple[int, str]:
    if name.endswith(".__main__") or name in MOVED:
        return len(FLOORS) - 1, "commands"
    best = None
    for floor, groups in enumerate(FLOORS):
        for group, prefixes in groups.items():
            for prefix in prefixes:
                if name == prefix or name.startswith(prefix + "."):
                    if best is None or len(prefix) > best[2]:
                        best = (floor, group, len(prefix))
    assert best is not None, f"{name} is on no floor: add its folder to FLOORS"
    return best[0], best[1]


def test_every_module_is_on_a_floor():
    for name in modules():
        if name not in PACKAGES:
            group_of(name)


def test_no_import_runs_up_a_floor_or_across_a_floor():
    wrong = []
    for source, targets in graph().items():
        if source in PACKAGES:
            continue
        floor, group = group_of(source)
        for target in targets:
            if target in PACKAGES:
                continue
            to_floor, to_group = group_of(target)
            if to_group != group and to_floor >= floor:
                wrong.append(f"{source} ({group}) imports {target} ({to_group})")
    assert not wrong, "imports against the floor plan:\n" + "\n".join(sorted(wrong))


def test_no_import_circle():
    edges = graph()
    circles = [c for c in strongly_connected(edges) if len(c) > 1]
    assert not circles, f"import circles: {circles}"


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components (iterative enough for a few hundred modules)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_checker_sees_a_circle_and_an_upward_import():
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"], ["c"]]
    assert group_of("pipeline.training.trainer")[0] > group_of("pipeline.monitor.tracker")[0]
    assert group_of("pipeline.models.__main__") == (len(FLOORS) - 1, "commands")


def test_commands_own_their_cli_and_engines_do_not_carry_a_command_name():
    for command in COMMANDS:
        text = (REPO / "pipeline" / f"{command}.py").read_text()
        assert "ArgumentParser(" in text, f"pipeline/{command}.py parses no arguments"
    for main in REPO.glob("pipeline/*/__main__.py"):
        assert "ArgumentParser(" in main.read_text(), f"{main} parses no arguments"
    clashes = [name for name in modules() if name.count(".") > 1 and name not in MOVED
               and name.rpartition(".")[2] in COMMANDS]
    assert not clashes, f"modules named like a command: {clashes}"


def test_moved_commands_forward_and_import_nothing():
    for old, new in MOVED.items():
        path = modules()[old]
        assert not imports_of(old, path, modules()), f"{old} should only forward"
        assert f'"{new}"' in path.read_text(), f"{old} does not forward to {new}"
        shown = subprocess.run([sys.executable, "-m", old, "--help"], cwd=REPO, text=True,
                               capture_output=True, timeout=120)
        assert shown.returncode == 0 and f"python -m {new}" in shown.stdout, shown.stderr


# --- the README's Layout section is the tree ---------------------------------------------

def layout_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```\n", 2)[1].splitlines()


def layout_files() -> set[str]:
    """Every FILE.py the Layout names, as a repository path, folders by indentation."""
    listed, folders = set(), []  # folders: (indent, name)
    for line in layout_block():
        match = re.match(r"( *)([\w.]+/)", line)
        if match:
            indent = len(match[1])
            folders = [f for f in folders if f[0] < indent] + [(indent, match[2])]
        base = "".join(name for _, name in folders)
        for file in re.findall(r"(?<![\w/])([\w]+\.py)\b", line):
            listed.add(base + file)
    return listed


def test_the_readme_layout_lists_every_module_and_only_those():
    actual = {str(p.relative_to(REPO)) for package in PACKAGES
              for p in (REPO / package).rglob("*.py") if p.name != "__init__.py"}
    listed = layout_files()
    assert not actual - listed, f"modules the README's Layout leaves out: {sorted(actual - listed)}"
    assert not listed - actual, f"the README's Layout names what is not there: "\
        f"{sorted(listed - actual)}"


# --- paths and modules named in docs and docstrings exist --------------------------------

TOP = ("pipeline", "data_prep", "tests", "bench", "slurm", "configs", "docs")
PATH = re.compile(rf"(?<![\w./~$-])((?:{'|'.join(TOP)})/[\w./<>*{{}}-]*)")
DOTTED = re.compile(r"(?<![\w./-])((?:pipeline|data_prep)(?:\.\w+)+)")


def doc_texts() -> list[tuple[str, str]]:
    """(where, text): the Markdown docs, every docstring, and the shell scripts' comments."""
    texts = [(str(p.relative_to(REPO)), p.read_text())
             for p in [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("slurm/**/*.md")]]
    for folder in (*PACKAGES, "bench", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                    doc = ast.get_docstring(node)
                    if doc:
                        texts.append((f"{path.relative_to(REPO)}", doc))
    for script in [*REPO.glob("slurm/**/*.sh"), REPO / "setup.sh", REPO / ".ci" / "run"]:
        comments = [line for line in script.read_text().splitlines()
                    if line.lstrip().startswith("#")]
        texts.append((str(script.relative_to(REPO)), "\n".join(comments)))
    return texts


def named_paths(text: str) -> set[str]:
    found = set()
    for token in PATH.findall(text):
        token = token.rstrip(".-/")
        if any(c in token for c in "<>*{}") or token.count("/") == 0:
            continue  # a pattern (runs/<name>/, step-*), not a path
        found.add(token)
    return found


def module_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = REPO.joinpath(*parts[:cut])
        file = path.with_suffix(".py") if not path.is_dir() else path / "__init__.py"
        if file.is_file():
            rest = parts[cut:]
            if not rest:
                return True
            # attributes of the module: each name must be defined in its source
            return all(re.search(rf"\b{re.escape(r)}\b", file.read_text()) for r in rest[:1])
    return False


def test_every_path_and_module_a_doc_names_exists():
    missing = []
    for where, text in doc_texts():
        for path in named_paths(text):
            if not (REPO / path).exists():
                missing.append(f"{where}: {path}")
        for dotted in DOTTED.findall(text):
            if not module_exists(dotted.rstrip(".")):
                missing.append(f"{where}: {dotted}")
    assert not missing, "docs name what is not there:\n" + "\n".join(sorted(set(missing)))


@pytest.mark.parametrize("text", ["see pipeline/nope.py and pipeline.nope.x",
                                  "pipeline.training.trainer.NoSuchThing"])
def test_the_doc_check_finds_a_wrong_name(text):
    paths = [p for p in named_paths(text) if not (REPO / p).exists()]
    dotted = [d for d in DOTTED.findall(text) if not module_exists(d)]
    assert paths or dotted


def test_every_python_m_command_in_the_docs_runs_a_module():
    wrong = []
    for where, text in doc_texts():
        for module in re.findall(r"python3? -m ((?:pipeline|data_prep)[\w.]*)", text):
            if importlib.util.find_spec(module.rstrip(".")) is None:
                wrong.append(f"{where}: python -m {module}")
    assert not wrong, "\n".join(sorted(set(wrong)))
