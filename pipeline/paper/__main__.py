"""The paper's experiments (pipeline/paper/__init__.py).

    python -m pipeline.paper mnist [--idx DIR] [--out paper/mnist] ...
    python -m pipeline.paper variants [--out paper/variants] ...

`python -m pipeline.paper COMMAND --help` lists a command's options.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> its module, imported only when asked: one missing module leaves the others working
COMMANDS = {"mnist": "pipeline.paper.mnist", "variants": "pipeline.paper.variants"}
USAGE = f"usage: python -m pipeline.paper {{{','.join(COMMANDS)}}} [--help | OPTIONS]"


def run_mnist(mnist, args: argparse.Namespace) -> int:
    from pipeline.files import describe_os_error
    from pipeline.paper import mnist_report  # matplotlib: only once there is data
    from pipeline.paper.idx import IdxError
    from pipeline.paper.mnist_data import DataError

    try:
        data, settings = mnist.load(args)
    except (DataError, IdxError) as err:
        print(f"mnist: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"mnist: {describe_os_error(err)}", file=sys.stderr)
        return 2
    curves = mnist.run(data, settings)
    paths = mnist_report.write_outputs(args.out, settings, data, curves)
    print(paths[-1].read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


RUNNERS = {"mnist": run_mnist, "variants": lambda variants, args: variants.run(args)}


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
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.paper {argv[0]}",
                                     description=module.__doc__.split("\n")[0])
    module.add_arguments(parser)
    return RUNNERS[argv[0]](module, parser.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
