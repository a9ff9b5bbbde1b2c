"""The paper's experiments (pipeline/paper/__init__.py).

    python -m pipeline.paper mnist [--idx DIR] [--out paper/mnist] ...
    python -m pipeline.paper variants [--out paper/variants] ...

`python -m pipeline.paper COMMAND --help` lists a command's options.
"""

from __future__ import annotations

import importlib
import sys

# command -> its module, imported only when asked: one missing module leaves the others working
COMMANDS = {"mnist": "pipeline.paper.mnist", "variants": "pipeline.paper.variants"}


USAGE = f"usage: python -m pipeline.paper {{{','.join(COMMANDS)}}} [--help | OPTIONS]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        what = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"{USAGE}\n{what}; the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    name = COMMANDS[argv[0]]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # a missing dependency of the module: its own message says which
            raise
        print(f"python -m pipeline.paper {argv[0]}: {name} is not in this checkout "
              f"({name.replace('.', '/')}.py is missing)", file=sys.stderr)
        return 2
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
