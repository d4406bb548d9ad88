#!/usr/bin/env bash
# tf_memorization launcher.
#
#   ./run.sh demo [train flags...]          offline demo on the bundled digits
#   ./run.sh test [pytest args...]          the test suite
#   ./run.sh cifar100|cifar10|mnist|imagenet [--per_gpu_workers] [train flags...]
#
# Creates .venv and installs the package (with test extras) when missing or
# when setup.py changed. Set TF_MEMORIZATION_GPU=1 to install the `gpu` extra.
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
  echo "Setting up $VENV (one time; a few minutes)..." >&2
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip >&2
  "$PY" -m pip install -q -e ".[$extras]" >&2
  rm -f "$VENV"/.tf_memorization-*
  touch "$stamp"
}

# Runs the train binary once, or one worker per GPU on disjoint shards.
train_on_gpus() {
  local per_gpu=0 args=()
  for a in "$@"; do
    if [ "$a" = --per_gpu_workers ]; then per_gpu=1; else args+=("$a"); fi
  done
  if [ "$per_gpu" = 0 ]; then
    "$PY" -m tf_memorization.train "${args[@]}"
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
    CUDA_VISIBLE_DEVICES=$i "$PY" -m tf_memorization.train "${args[@]}" \
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
    "$PY" -m tf_memorization.train --gin_file=gin_configs/demo.gin "${args[@]}"
    workdir=$(printf '%s\n' "${args[@]}" | sed -n 's/^--workdir=//p' | tail -1)
    data_dir=$(printf '%s\n' "${args[@]}" | sed -n 's/^--data_dir=//p' | tail -1)
    "$PY" -m tf_memorization.inspect_workdir --workdir="$workdir"
    "$PY" -m tf_memorization.estimate --workdir="$workdir" \
      --data_dir="$data_dir" --gin_file=gin_configs/demo_estimate.gin
    ;;
  test)
    ensure_env
    "$PY" -m pytest -q tests "$@"
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
