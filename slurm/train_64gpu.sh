#!/bin/bash
# BN-Inception on 8 nodes x 8 GPUs: one task per GPU under srun, preemption-safe.
#
#   sbatch slurm/train_64gpu.sh [CONFIG] [key=value ...]       # from any folder
#   sbatch ~/bn-inception/slurm/train_64gpu.sh ...       # runs/ lands in the folder you submit from
#   sbatch --nodes=2 --gpus-per-node=4 --ntasks-per-node=4 slurm/train_64gpu.sh ...
#   PREFLIGHT=1 sbatch slurm/train_64gpu.sh ...    # check the allocation first (pipeline.preflight)
#   DRY_RUN=1 sbatch slurm/train_64gpu.sh          # every task prints who it is; no training
#
# CONFIG defaults to configs/bn_inception.yaml; overrides follow it (data.shards=...).
# Without name=..., the run is named <config>-<job id>: a requeued job (same id) resumes
# its own run folder, a new submission starts a new one; pass name=... to continue one.
#
# Preemption and the time limit: SLURM sends USR2 to every task 300 s ahead (no "B:", so
# the tasks get it, not this shell; it may come up to 60 s early), SIGTERM on preemption.
# Every rank then saves the same step, rank 0 runs `scontrol requeue`, and the job comes
# back with the same id and resumes from that checkpoint (up to dist.max_requeues times).
# --open-mode=append keeps the log of every incarnation in one file.
#
# A crashed or frozen rank (killed, an unexpected error, a dead peer, a hang) costs a restart
# of the step inside the allocation, not the job: up to dist.max_restarts=3 times, and a
# node that fails twice is replaced by a spare one (SPARE_NODES; see the end of this file).
#
# The log: slurm/logs/<job name>-<job id>.out of this repository, wherever you submit from
# (SLURM opens %x-%j.out in the submit folder; the script moves its output to the
# repository and removes that file while it is empty). An --output=FILE of yours is kept.
#
# Site settings (NCCL_IB_HCA, NCCL_SOCKET_IFNAME, modules, proxies) belong in a file of
# your cluster's, sourced when CLUSTER_ENV names it:
#   CLUSTER_ENV=$HOME/cluster.env sbatch slurm/train_64gpu.sh
#SBATCH --job-name=bn-inception
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --signal=USR2@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

die() { echo "train_64gpu.sh: $*" >&2; exit 2; }

cd "${SLURM_SUBMIT_DIR:-.}"
[ -n "${SLURM_JOB_ID:-}" ] || die "submit me with sbatch (see the top of this file)"

# sbatch runs a copy of this file: the job's record names the original, in the repository.
job=$(scontrol show job -o "$SLURM_JOB_ID")
script=$(grep -o 'Command=[^ ]*' <<<"$job" | cut -d= -f2-)
[[ $script == /* ]] || script=$PWD/$script
repo=$(cd "$(dirname "$script")/.." && pwd) || die "cannot find the repository of $script"
stdout=$(grep -o 'StdOut=[^ ]*' <<<"$job" | cut -d= -f2-)
if [ "$stdout" = "$PWD/$SLURM_JOB_NAME-$SLURM_JOB_ID.out" ]; then  # the default: move it
  mkdir -p "$repo/slurm/logs"
  exec >>"$repo/slurm/logs/$SLURM_JOB_NAME-$SLURM_JOB_ID.out" 2>&1
  [ -s "$stdout" ] || rm -f "$stdout"
fi

config=configs/bn_inception.yaml
if [ $# -gt 0 ] && [[ $1 != *=* ]]; then config=$1; shift; fi
[ -f "$config" ] || [[ $config == /* ]] || [ ! -f "$repo/$config" ] || config=$repo/$config
[ -f "$config" ] || die "config $config not found (from $PWD); give a YAML of configs/"

# Every task sees all of its node's GPUs and takes GPU SLURM_LOCALID: narrowing
# CUDA_VISIBLE_DEVICES per task would block NCCL's CUDA IPC / P2P inside the node.
tasks=${SLURM_NTASKS_PER_NODE:-1}
gpus=${SLURM_GPUS_PER_NODE:-}
gpus=${gpus##*:}  # "h100:8" -> 8
if [ -n "$gpus" ] && [ "$tasks" -gt "$gpus" ]; then
  die "$tasks tasks per node but $gpus GPUs per node: give --ntasks-per-node <= --gpus-per-node"
fi

# Since SLURM 22.05 srun no longer inherits --cpus-per-task; without this DALI's threads
# and the rank's own share one core.
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # DALI has its own threads; torch's stay few

# NCCL: safe defaults only. A failed collective raises (and ends the job) instead of hanging;
# NCCL warnings reach the log. Interfaces and HCAs are the site file's business.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
if [ -n "${CLUSTER_ENV:-}" ]; then
  [ -f "$CLUSTER_ENV" ] || die "CLUSTER_ENV=$CLUSTER_ENV: no such file"
  # shellcheck disable=SC1090
  source "$CLUSTER_ENV"
fi

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi

named=false
for arg in "$@"; do [[ $arg == name=* ]] && named=true; done
$named || set -- "$@" "name=$(basename "$config" .yaml)-$SLURM_JOB_ID"

echo "train_64gpu.sh: job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on" \
  "$SLURM_JOB_NUM_NODES nodes x $tasks tasks ($SLURM_JOB_NODELIST): $config $*"

if [ -n "${DRY_RUN:-}" ]; then
  exec srun "$PYTHON" -m pipeline.dist
fi
if [ -n "${PREFLIGHT:-}" ]; then
  srun "$PYTHON" -m pipeline.preflight --config "$config" "$@" || die "preflight failed"
fi
# --kill-on-bad-exit: a rank that crashes ends the step at once, not after a collective
# timeout. After a preemption save rank 0 requeues before any rank exits.
# In-job restarts: a step that crashed (a rank killed by a signal, an unexpected error, a
# collective whose peer died, a rank frozen past its watchdog, no rendezvous) runs again in
# the same allocation, up to dist.max_restarts times (default 3) with a growing pause
# (dist.restart_pause_s), and resumes from the newest checkpoint. What another start cannot
# fix ends the job at once: the user's error or a NaN (one line above says which), a config
# error, a save for a requeue, Ctrl-C. srun's status cannot tell them apart (after
# --kill-on-bad-exit it is that of the ranks it stopped), so every task writes how it
# ended into a folder of this job's, and pipeline.triage reads them, records the failure in
# the run folder (failures.jsonl) and says what to do.
# A node whose ranks caused two failures in a row is left out when the allocation has a
# spare node: SPARE_NODES=1 sbatch --nodes=9 ... trains on 8 and keeps one in reserve.
spare=${SPARE_NODES:-0}
[[ $spare =~ ^[0-9]+$ ]] || die "SPARE_NODES=$spare: give a whole number"
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
need=$((${#nodes[@]} - spare))
[ "$need" -ge 1 ] || die "SPARE_NODES=$spare leaves no node of the ${#nodes[@]} to train on"
if [ "$spare" -gt 0 ] && [ -z "${SLURM_NTASKS_PER_NODE:-}" ]; then
  die "SPARE_NODES needs --ntasks-per-node (the tasks of each node that trains)"
fi
mkdir -p "$repo/slurm/logs"
endings=$repo/slurm/logs/$SLURM_JOB_NAME-$SLURM_JOB_ID.endings
export PIPELINE_ENDINGS_DIR=$endings
excluded=""
attempt=0
while true; do
  rm -rf "$endings" && mkdir -p "$endings"
  placement=()
  if [ "$spare" -gt 0 ]; then
    placement=(--nodes="$need" --ntasks=$((need * tasks)) ${excluded:+--exclude="$excluded"})
  fi
  status=0
  srun --kill-on-bad-exit=1 "${placement[@]}" "$PYTHON" -m pipeline.train --config "$config" "$@" || status=$?
  [ "$status" -eq 0 ] && { rm -rf "$endings"; exit 0; }
  IFS=, read -ra out <<<"$excluded"
  left=$((spare - ${#out[@]}))
  read -r action value hosts < <("$PYTHON" -m pipeline.triage --endings "$endings" \
    --status "$status" --attempt "$attempt" --spare "$left" --config "$config" "$@" || true) || true
  rm -rf "$endings"
  case ${action:-} in
    stop) exit "$value" ;;
    restart) ;;
    exclude) excluded=${excluded:+$excluded,}$hosts ;;
    *) echo "train_64gpu.sh: pipeline.triage gave no decision; stopping" >&2; exit "$status" ;;
  esac
  attempt=$((attempt + 1))
  sleep "$value"
done
