#!/usr/bin/env bash
# One prepared GPU check: build, gpu-marked tests, GPU benchmark suites -> JSON + Markdown.
#
#   scripts/gpu_check.sh [--dry-run] [OUT_DIR]     (OUT_DIR defaults to $OUT, then ./gpu_check_out)
#
# Made for a lent one-GPU machine (H200, torch 2.11, triton 3.6, 10 minutes a command): the
# steps are budgeted to finish within 8 minutes (build 180 s, tests 150 s, suites 240 s, each
# under `timeout`). A step that fails is recorded in steps.jsonl and the next one runs; the
# suites runner (benchmarks/gpu/run_suites.py) records a failing suite's error and goes on.
# Output (at most 8 files, as the lent machine returns): results.json, results.md,
# build.log, gpu_tests.log, suites.log, steps.jsonl.
# --dry-run: CPU smoke mode for CI (tests/test_gpu_check_dry_run.py): no build, no tests,
# every suite at tiny sizes on CPU (Triton kernels interpreted). Numbers are meaningless.
set -u
cd "$(dirname "$0")/.."
DRY=0
DIR=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -*) echo "gpu_check.sh: unknown flag $arg (expected --dry-run [OUT_DIR])" >&2; exit 2 ;;
    *) DIR="$arg" ;;
  esac
done
DIR="${DIR:-${OUT:-./gpu_check_out}}"
mkdir -p "$DIR" || { echo "gpu_check.sh: cannot create $DIR" >&2; exit 2; }
STEPS="$DIR/steps.jsonl"
: > "$STEPS"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

record() {  # step name, exit code, seconds
  local status=ok
  [ "$2" -eq 0 ] || status="failed (exit $2$([ "$2" -eq 124 ] && echo ', timed out'))"
  printf '{"step": "%s", "status": "%s", "seconds": %s}\n' "$1" "$status" "$3" >> "$STEPS"
  echo "== $1: $status in $3 s"
}

run_step() {  # name, timeout seconds, log file, command...
  local name=$1 limit=$2 log=$3; shift 3
  local start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  record "$name" $? $((SECONDS - start))
}

if [ "$DRY" -eq 0 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  # C++ (and CUDA, where csrc/cuda/*.cu exist and nvcc is found) extension, in place.
  run_step build 180 "$DIR/build.log" env MAX_JOBS="$(nproc)" "$PY" setup.py build_ext --inplace
  run_step gpu_tests 150 "$DIR/gpu_tests.log" "$PY" -m pytest -q -m 'gpu and not multigpu' \
    -p no:cacheprovider tests/
  tail -n 5 "$DIR/gpu_tests.log"
  SUITE_ARGS=()
else
  SUITE_ARGS=(--dry-run)
fi
start=$SECONDS
timeout 240 "$PY" benchmarks/gpu/run_suites.py --out "$DIR" --steps-file "$STEPS" \
  "${SUITE_ARGS[@]}" > "$DIR/suites.log" 2>&1
rc=$?
echo "== suites: exit $rc in $((SECONDS - start)) s"
if [ -f "$DIR/results.md" ]; then cat "$DIR/results.md"; else tail -n 30 "$DIR/suites.log"; fi
exit $rc
