#!/usr/bin/env bash
# A real SLURM cluster on one machine: 8 fake nodes (node[1-8]) x 8 CPUs x 8 fake GPUs,
# one slurmctld, one slurmd per node and a private munged, everything under SCRATCH_DIR.
# Settings verified on Debian 12, SLURM 22.05, as root.
#
#   bash slurm/local/cluster.sh start  SCRATCH_DIR   # write config, start daemons, wait for idle
#   eval "$(bash slurm/local/cluster.sh env SCRATCH_DIR)"   # export SLURM_CONF for sbatch & co
#   bash slurm/local/cluster.sh status SCRATCH_DIR   # daemons by pid file + sinfo; rc 1 if down
#   bash slurm/local/cluster.sh stop   SCRATCH_DIR   # cancel jobs, shut down, reap by pid file
#
# Environment:
#   SLURM_LOCAL_PORT     first of 9 consecutive TCP ports (slurmctld, then one per slurmd);
#                        default: a free block picked at random in 20000-59999
#   SLURM_LOCAL_TIMEOUT  seconds start waits for all nodes to be idle (default 60)
set -euo pipefail

export PATH=$PATH:/usr/sbin:/sbin  # the daemons live in sbin, often not on a user's PATH
readonly NODES=8 CPUS=8 GPUS=8
readonly DAEMONS="slurmctld slurmd munged"

die() { echo "cluster.sh: $*" >&2; exit 1; }

usage() {
  grep -E '^#   (bash|eval) ' "$0" | cut -c5- >&2
  exit 2
}

# Paths of one cluster, all under the scratch folder.
set_paths() {
  root=$(realpath -m "$1")
  [[ $root != *[[:space:]]* ]] || die "SCRATCH_DIR must not contain whitespace: '$root'"
  conf=$root/etc/slurm.conf
  munge_socket=$root/munge/munge.socket
  ctld_pid=$root/run/slurmctld.pid
  export SLURM_CONF=$conf
}

node_names() { local i; for ((i = 1; i <= NODES; i++)); do echo "node$i"; done; }

pid_files() {
  echo "$ctld_pid"
  local n; for n in $(node_names); do echo "$root/run/slurmd-$n.pid"; done
  echo "$root/munge/munged.pid"
}

# The pid in a pid file, if that process is alive and is one of our daemons (a pid file
# can outlive its process and the pid can be reused by something else).
live_pid() {
  local file=$1 pid exe
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  exe=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n1)
  [[ " $DAEMONS " == *" $(basename -- "$exe") "* ]] || return 1
  echo "$pid"
}

all_up() {
  local f; for f in $(pid_files); do live_pid "$f" >/dev/null || return 1; done
}

port_in_use() { ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }

pick_base_port() {
  if [ -n "${SLURM_LOCAL_PORT:-}" ]; then echo "$SLURM_LOCAL_PORT"; return; fi
  local base p try
  for ((try = 0; try < 50; try++)); do
    base=$((20000 + RANDOM % 40000))
    for ((p = base; p <= base + NODES; p++)); do port_in_use "$p" && continue 2; done
    echo "$base"; return
  done
  die "found no free block of $((NODES + 1)) TCP ports; set SLURM_LOCAL_PORT"
}

# A fake GPU: a character device aliasing /dev/null (1:3), so that slurmd accepts it and
# sets CUDA_VISIBLE_DEVICES; an empty file where mknod is refused (jobs still run, but
# slurmd logs "not a valid character or block device" and sets no CUDA_VISIBLE_DEVICES).
make_gpu_file() {
  [ -c "$1" ] && return 0
  rm -f "$1"
  mknod "$1" c 1 3 2>/dev/null || touch "$1"
}

write_config() {
  local base=$1 host i
  host=$(hostname -s)
  mkdir -p "$root"/{etc,dev,state,spool,log,run,tmp}
  for ((i = 0; i < GPUS; i++)); do make_gpu_file "$root/dev/gpu$i"; done
  cat >"$conf" <<EOF
# Written by slurm/local/cluster.sh; rewritten on every start.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$base
SlurmdPort=$((base + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_socket
StateSaveLocation=$root/state
SlurmdSpoolDir=$root/spool/%n
SlurmctldPidFile=$ctld_pid
SlurmdPidFile=$root/run/slurmd-%n.pid
SlurmctldLogFile=$root/log/slurmctld.log
SlurmdLogFile=$root/log/slurmd-%n.log
TmpFS=$root/tmp
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MailProg=/bin/true
GresTypes=gpu
NodeName=node[1-$NODES] NodeHostname=$host NodeAddr=127.0.0.1 Port=$((base + 1))-$((base + NODES)) CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=64000 Gres=gpu:$GPUS State=UNKNOWN
PartitionName=local Nodes=node[1-$NODES] Default=YES DefaultTime=01:00:00 MaxTime=04:00:00 OverSubscribe=FORCE State=UP
EOF
  cat >"$root/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=node[1-$NODES] Name=gpu File=$root/dev/gpu[0-$((GPUS - 1))]
EOF
}

# A munged of our own, on a socket under the scratch folder (AuthInfo=socket=...), so the
# cluster needs nothing from /etc or /run and stopping it leaves the host as it was.
start_munge() {
  local dir=$root/munge
  mkdir -p "$dir" && chmod 0700 "$dir"
  [ -s "$dir/munge.key" ] || mungekey --create --keyfile="$dir/munge.key"
  live_pid "$dir/munged.pid" >/dev/null && return 0
  munged --force --socket="$munge_socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
  munge --socket="$munge_socket" -n | unmunge --socket="$munge_socket" >/dev/null ||
    die "munged does not answer on $munge_socket; see $dir/munged.log"
}

start_slurm() {
  local n
  slurmctld -f "$conf"
  for n in $(node_names); do
    mkdir -p "$root/spool/$n"
    slurmd -f "$conf" -N "$n"
  done
}

idle_nodes() { sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2 == "idle"' | sort -u | wc -l; }

fail_start() {
  echo "cluster.sh: $1" >&2
  echo "--- sinfo ---" >&2; sinfo -N 2>&1 | head -n 20 >&2 || true
  local log
  for log in "$root/log/slurmctld.log" "$root/log/slurmd-node1.log"; do
    [ -f "$log" ] && { echo "--- tail $log ---" >&2; tail -n 20 "$log" >&2; }
  done
  cmd_stop >/dev/null 2>&1 || true
  exit 1
}

wait_idle() {
  local limit=${SLURM_LOCAL_TIMEOUT:-60} waited=0
  until [ "$(idle_nodes)" -eq "$NODES" ]; do
    live_pid "$ctld_pid" >/dev/null || [ "$waited" -lt 5 ] || fail_start "slurmctld exited"
    [ "$waited" -lt "$limit" ] || fail_start "nodes not all idle after ${limit}s"
    sleep 1; waited=$((waited + 1))
  done
}

cmd_start() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null ||
    die "SLURM/munge missing: apt-get install -y slurmctld slurmd slurm-client munge"
  if all_up; then
    echo "cluster.sh: already running ($conf)"; return 0
  fi
  cmd_stop >/dev/null  # a partly-down cluster is restarted whole (its jobs are cancelled)
  local base; base=$(pick_base_port)
  write_config "$base"
  start_munge
  start_slurm
  wait_idle
  echo "cluster.sh: $NODES nodes idle; slurmctld on port $base; SLURM_CONF=$conf"
}

# Ends the daemons named by our pid files: TERM to all, up to 10 s, then KILL. (A slurmd
# still retrying registration with a dead slurmctld can sit on TERM for that long.)
reap() {
  local f pid pids=() alive=() i
  for f in $(pid_files); do pid=$(live_pid "$f") && pids+=("$pid"); done
  [ ${#pids[@]} -gt 0 ] && { kill -TERM "${pids[@]}" 2>/dev/null || true; }
  for ((i = 0; i < 50; i++)); do
    alive=()
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && break
    sleep 0.2
  done
  [ ${#alive[@]} -gt 0 ] && { kill -KILL "${alive[@]}" 2>/dev/null || true; }
  for f in $(pid_files); do rm -f "$f"; done
}

cmd_stop() {
  [ -f "$conf" ] || { echo "cluster.sh: no cluster in $root"; return 0; }
  local i jobs
  if live_pid "$ctld_pid" >/dev/null; then
    # Cancel first: job steps run under slurmstepd, which has no pid file of ours.
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 30; i++)); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    timeout 10 scontrol shutdown >/dev/null 2>&1 || true
    for ((i = 0; i < 50; i++)); do live_pid "$ctld_pid" >/dev/null || break; sleep 0.2; done
  fi
  reap
  echo "cluster.sh: stopped ($root)"
}

cmd_status() {
  local f pid
  for f in $(pid_files); do
    if pid=$(live_pid "$f"); then echo "up    $pid $(basename "$f" .pid)"
    else echo "down  -  $(basename "$f" .pid)"; fi
  done
  live_pid "$ctld_pid" >/dev/null && sinfo -N
  all_up
}

cmd_env() {
  [ -f "$conf" ] || die "no cluster in $root; run: $0 start $root"
  echo "export SLURM_CONF=$conf"
}

main() {
  [ $# -eq 2 ] || usage
  [ "$(id -u)" -eq 0 ] || [ "$1" = env ] || die "must run as root (SlurmUser=root)"
  set_paths "$2"
  case $1 in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
  esac
}

main "$@"
