#!/usr/bin/env bash
# Creates .venv/ and installs the pipeline into it.
#   bash setup.sh         runtime only
#   bash setup.sh --dev   plus pytest/ruff and the local SLURM daemons the tests submit to
set -euo pipefail
cd "$(dirname "$0")"

python_bin=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build on CPU machines.
"${pip[@]}" "torch==2.13.0"
# DS_BUILD_OPS=0: DeepSpeed builds its ops just in time instead of at install.
if [ "${1:-}" = "--dev" ]; then
  DS_BUILD_OPS=0 "${pip[@]}" -e ".[dev]"
  # DeepSpeed's CPU accelerator JIT-builds its shared-memory op on first use (~50 s);
  # once here rather than inside the first DeepSpeed test (cached in ~/.cache).
  .venv/bin/python -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" \
    >/dev/null 2>&1 || echo "setup.sh: DeepSpeed's shm op did not build; tests build it" >&2
  if ! command -v slurmctld >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        slurmctld slurmd slurm-client munge >/dev/null
    else
      echo "setup.sh: SLURM daemons missing and not root; SLURM tests will be skipped" >&2
    fi
  fi
else
  DS_BUILD_OPS=0 "${pip[@]}" -e .
fi
echo "setup.sh: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
