#!/usr/bin/env bash
# tf_memorization launcher.
#
#   ./run.sh demo [train flags...]          offline demo on the bundled digits
#   ./run.sh test [pytest args...]          the test suite (two worker
#                                           processes; TF_MEMORIZATION_TEST_WORKERS=N
#                                           sets how many, 0 runs it in this one)
#   ./run.sh cifar100|cifar10|mnist|imagenet [--per_gpu_workers] [train flags...]
#
# Creates .venv and installs the package (with test extras) when missing or
# when setup.py changed; the install's full log goes to .venv/install.log.
# Set TF_MEMORIZATION_GPU=1 to install the `gpu` extra.
#
# The binaries print only the project's own lines: TensorFlow's C++ log lines
# (oneDNN and CUDA notices, absl's pre-init warning) are filtered here, its
# Python warnings in the binaries. TF_MEMORIZATION_VERBOSE=1 shows everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)
VENV=${TF_MEMORIZATION_VENV:-$ROOT/.venv}
PY=$VENV/bin/python

ensure_env() {
  local extras=test
  [ "${TF_MEMORIZATION_GPU:-0}" = 1 ] && extras=test,gpu
  local stamp="$VENV/.tf_memorization-$(cat setup.py | sha1sum | cut -c1-12)-$extras"
  if [ -f "$stamp" ] && [ -x "$PY" ]; then return; fi
  local log="$VENV/install.log"
  echo "Setting up $VENV (one time; a few minutes; log: $log)..." >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  if ! { "$PY" -m pip install --upgrade pip \
         && "$PY" -m pip install -e ".[$extras]"; } > "$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: installing the package failed; the full log is $log." >&2
    exit 2
  fi
  rm -f "$VENV"/.tf_memorization-*
  touch "$stamp"
}

# TensorFlow's C++ log lines ("I0000 00:00:... port.cc:153] oneDNN ..."),
# absl's pre-init notice, and the CPU-feature notice's second line.
TF_NOISE='^[IWEF][0-9]{4} [0-9:.]+ +[0-9]+ [^ ]+:[0-9]+\] |^WARNING: All log messages before absl::InitializeLog\(\) is called|^To enable the following instructions: '

# Runs a command with TensorFlow's log lines filtered from its stderr
# (TF_MEMORIZATION_VERBOSE=1: unfiltered); returns the command's status.
quiet() {
  if [ "${TF_MEMORIZATION_VERBOSE:-0}" != 0 ]; then "$@"; return; fi
  local status
  set +e
  { "$@" 2>&1 1>&3 3>&- | grep --line-buffered -v -E "$TF_NOISE" 1>&2 3>&-; } 3>&1
  status=${PIPESTATUS[0]}
  set -e
  return "$status"
}

# Runs the train binary once, or one worker per GPU on disjoint shards.
train_on_gpus() {
  local per_gpu=0 args=()
  for a in "$@"; do
    if [ "$a" = --per_gpu_workers ]; then per_gpu=1; else args+=("$a"); fi
  done
  if [ "$per_gpu" = 0 ]; then
    quiet "$PY" -m tf_memorization.train "${args[@]}"
    return
  fi
  local gpus
  gpus=$(nvidia-smi -L 2>/dev/null | wc -l || true)
  if [ "${gpus:-0}" -lt 1 ]; then
    echo "error: --per_gpu_workers needs NVIDIA GPUs (nvidia-smi -L lists none)." >&2
    exit 2
  fi
  echo "Starting $gpus workers, one per GPU, on shards of the same workdir." >&2
  local pids=() i status=0
  for ((i = 0; i < gpus; i++)); do
    CUDA_VISIBLE_DEVICES=$i quiet "$PY" -m tf_memorization.train "${args[@]}" \
      --shard_index="$i" --num_shards="$gpus" \
      --gin_bindings="get_strategy.kind = 'one_device'" \
      > >(sed -u "s/^/[gpu $i] /") 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "worker on GPU $i failed; rerun the same command to resume." >&2
      status=2
    fi
  done
  return $status
}

has_flag() {  # has_flag --name args...
  local name=$1; shift
  for a in "$@"; do case "$a" in "$name"|"$name"=*) return 0;; esac; done
  return 1
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    ensure_env
    args=("$@")
    has_flag --workdir "$@" || args+=(--workdir="$ROOT/workdirs/demo")
    has_flag --data_dir "$@" || args+=(--data_dir="$ROOT/workdirs/tfds")
    quiet "$PY" -m tf_memorization.train --gin_file=gin_configs/demo.gin "${args[@]}"
    workdir=$(printf '%s\n' "${args[@]}" | sed -n 's/^--workdir=//p' | tail -1)
    data_dir=$(printf '%s\n' "${args[@]}" | sed -n 's/^--data_dir=//p' | tail -1)
    quiet "$PY" -m tf_memorization.inspect_workdir --workdir="$workdir"
    quiet "$PY" -m tf_memorization.estimate --workdir="$workdir" \
      --data_dir="$data_dir" --gin_file=gin_configs/demo_estimate.gin
    ;;
  test)
    ensure_env
    # Test modules go to the workers whole (--dist loadfile), so that a
    # module's trained fixtures are trained once.
    "$PY" -m pytest -q -n "${TF_MEMORIZATION_TEST_WORKERS:-2}" \
      --dist loadfile tests "$@"
    ;;
  cifar100|cifar10|mnist|imagenet)
    ensure_env
    args=("$@")
    has_flag --workdir "$@" || args+=(--workdir="$ROOT/workdirs/$cmd")
    train_on_gpus --gin_file="gin_configs/$cmd.gin" "${args[@]}"
    ;;
  help|-h|--help)
    sed -n '2,/^[^#]/p' "$0" | sed -n 's/^# \{0,1\}//p'
    ;;
  *)
    echo "error: unknown command '$cmd'; use demo, test, cifar100, cifar10, mnist or imagenet." >&2
    exit 2
    ;;
esac
