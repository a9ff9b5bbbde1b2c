#!/usr/bin/env bash
# The GPU check: what the pipeline does on CUDA, in phases that each end well inside one
# 10-minute call to a GPU machine (docs/gpu-check.md lists the calls, command by command).
#
#   bash bench/gpu_check.sh torch OUT [--dry-run]   # pytest -m gpu part 1; model img/s
#   bash bench/gpu_check.sh dali OUT [--dry-run]    # part 2; decode img/s; end to end
#   bash bench/gpu_check.sh summary OUT             # every phase's figures beside targets
#
# Each phase writes OUT/PHASE/: a log per step, steps.jsonl (step, status, seconds) and the
# figures as JSON, then prints the summary. Without CUDA it prints "no CUDA: skipped" and
# exits 0; --dry-run runs every step on the CPU at tiny sizes through the same code, so all
# but CUDA itself is proven on a machine without a GPU. Exit status: 1 if a step failed.
#
# PYTHON: the interpreter (default: the repository's .venv, else python3). GPU_CHECK_SITE:
# a folder of packages installed with `pip install --target` (DALI and the rest on the GPU
# machine), put first on PYTHONPATH.
set -uo pipefail

usage() { echo "usage: bash bench/gpu_check.sh torch|dali|summary OUT [--dry-run]" >&2; exit 2; }
[ $# -ge 2 ] || usage
phase=$1 out=$2 dry=${3:-}
case $phase in torch | dali | summary) ;; *) usage ;; esac
[ -z "$dry" ] || [ "$dry" = --dry-run ] || usage
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$repo" || exit 2
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -n "${GPU_CHECK_SITE:-}" ]; then export PYTHONPATH=$GPU_CHECK_SITE${PYTHONPATH:+:$PYTHONPATH}; fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}

if [ "$phase" = summary ]; then
  exec "$PYTHON" bench/gpu_summary.py "$out"
fi
cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$cuda" != 1 ] && [ -z "$dry" ]; then
  echo "no CUDA: skipped (bash bench/gpu_check.sh $phase OUT --dry-run runs it on the CPU)"
  exit 0
fi
device=cuda
if [ -n "$dry" ]; then
  export GPU_CHECK_DRY_RUN=1
  device=cpu
fi
dir=$out/$phase
mkdir -p "$dir"
: >"$dir/steps.jsonl"
failed=0

# step NAME COMMAND...: runs it with its output in NAME.log and its status in steps.jsonl.
step() {
  local name=$1 started status ms
  shift
  echo "== $phase/$name: $*"
  started=$(date +%s%3N)
  "$@" >"$dir/$name.log" 2>&1
  status=$?
  ms=$(($(date +%s%3N) - started))
  printf '{"step": "%s", "status": %d, "seconds": %d.%03d}\n' "$name" "$status" \
    $((ms / 1000)) $((ms % 1000)) >>"$dir/steps.jsonl"
  tail -n 4 "$dir/$name.log"
  [ "$status" -eq 0 ] || { failed=1; echo "== $phase/$name FAILED (status $status): $dir/$name.log"; }
}

tests() {
  "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu "tests/gpu/test_$1_gpu.py" \
    --junitxml="$dir/tests.xml"
}

if [ "$phase" = torch ]; then
  step facts "$PYTHON" bench/gpu_facts.py --json "$dir/facts.json"
  step tests tests torch
  if [ -n "$dry" ]; then
    step synthetic "$PYTHON" bench/gpu_throughput.py --device cpu --size 32 --batches 4 8 \
      --compiled 4 --steps 2 --json "$dir/synthetic.json"
  else
    step synthetic "$PYTHON" bench/gpu_throughput.py --device cuda --size 224 \
      --batches 64 128 256 --compiled 256 --steps 50 --json "$dir/synthetic.json"
  fi
else
  step tests tests dali
  if [ -n "$dry" ]; then
    step decode "$PYTHON" bench/gpu_decode.py --device cpu --images 200 --loads 0 0.9 \
      --epochs 1 --size 64 --batch 16 --workers 2 --json "$dir/decode.json"
    step end_to_end "$PYTHON" bench/train_throughput.py --device cpu --size 64 --batch 8 \
      --steps 2 --rounds 1 --workers 2 --json "$dir/end_to_end.json"
  else
    step decode "$PYTHON" bench/gpu_decode.py --device cuda --images 4000 \
      --loads 0 0.65 0.9 0.99 --epochs 3 --workers 8 --json "$dir/decode.json"
    step end_to_end "$PYTHON" bench/train_throughput.py --device cuda --size 224 \
      --batch 256 --steps 50 --rounds 3 --workers 8 --json "$dir/end_to_end.json"
  fi
fi
"$PYTHON" bench/gpu_summary.py "$out"
exit "$failed"
