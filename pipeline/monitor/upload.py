"""Moved: the upload command is `python -m pipeline.upload` now; this old spelling runs it."""

import runpy

if __name__ == "__main__":
    runpy.run_module("pipeline.upload", run_name="__main__", alter_sys=True)
