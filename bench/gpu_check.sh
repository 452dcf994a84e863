#!/usr/bin/env bash
# The CUDA path on one GPU machine, in one run of at most about 7 minutes: install from
# carried wheels, preflight, the transfer micro-benchmark, --check, timed runs at two sizes,
# one profile and every built-in schedule predicted from it and measured. Writes two files
# into OUT: gpu_check.tar.gz (everything) and gpu_check.md (bench/gpu_summary.py's page).
#
#   bash bench/gpu_check.sh [--dry-run] [--smoke] [--only REGEX] [--budget S] [OUT]   (OUT: out/gpu_check)
#
#   --dry-run    print every command of the plan, run none (no GPU needed)
#   --smoke      rehearse the whole flow on this machine's CPU with tiny sizes and .venv
#                ($PYTHON if set): the numbers mean nothing; the flow, the files and the
#                summary are real
#   --only REGEX run only the steps whose name matches, e.g. '^(profile|large-)' in a
#                second lease (the install and preflight steps always run)
#   --budget S   seconds for all the steps (default 390); a step that would start with
#                less than 20 s left is skipped and listed as such; the summary and the
#                archive come after, in a few seconds
#
# Before the GPU machine: bash bench/gpu_wheels.sh here fills .whl/ (mpich, mpi4py, simpy
# for its Python 3.12). The call carries .whl, runs `bash bench/gpu_check.sh $OUT` (the two
# files come back) and gives it about 480 s (timeout_s), so that the archive is written
# even when the budget runs out. There the machine's own python3 (it holds a
# CUDA torch) is used: the wheels go under /tmp/pipebubble with pip's --prefix (--target
# drops the mpich wheel's lib/, where libmpi lives), the repository itself is on
# PYTHONPATH, and mpiexec is the one the mpich wheel installs.
#
# Bounds: every executor run gets --timeout 60 (its watchdog ends a hung step), every
# command runs under timeout(1) with its own cap cut to what is left of the budget, and
# Python runs unbuffered, so each log holds everything up to a hang.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DRY=0 SMOKE=0 ONLY="" BUDGET=390 OUT=""
while (($#)); do
  case $1 in
    --dry-run) DRY=1 ;;
    --smoke) SMOKE=1 ;;
    --only) ONLY=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
    *) OUT=$1 ;;
  esac
  shift
done
OUT=${OUT:-out/gpu_check}
M=8
if ((SMOKE)); then
  PY=${PYTHON:-$ROOT/.venv/bin/python}
  MPIEXEC=$(dirname "$PY")/mpiexec  # the MPICH wheel's, beside the Python it was installed for
  DEVICE=(--device cpu --threads 1) STEPS=3 REPEATS=3
  SMALL=(--width 64 --batch 64 --layers 4) LARGE=(--width 128 --batch 128 --layers 4)
  BENCH=(--device cpu --staged --sizes 64K,1M --repeats 3 --share-seconds 0.1)
else
  PY=${PYTHON:-python3} MPIEXEC=/tmp/pipebubble/bin/mpiexec  # the wheel's; found again after the install
  DEVICE=(--device cuda) STEPS=10 REPEATS=5
  SMALL=(--width 512 --batch 512 --layers 8)    # the default MLP: 64-row microbatches, launch-bound on a GPU
  LARGE=(--width 4096 --batch 4096 --layers 8)  # 512-row microbatches of 4096: kernels dominate
  BENCH=(--sizes 64K,1M,16M,64M --repeats 20 --share-seconds 0.3)
fi
PREFIX=/tmp/pipebubble

if ((!DRY && !SMOKE)) && ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  echo "gpu_check: no GPU visible (nvidia-smi missing or failing); --dry-run prints the plan, --smoke rehearses it on CPU" >&2
  exit 2
fi
if ((!DRY && !SMOKE)) && ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "gpu_check: no wheels in .whl/: run bash bench/gpu_wheels.sh where pip reaches PyPI, and carry .whl" >&2
  exit 2
fi
if ((DRY)); then WORK=/tmp/gpu_check.XXXXXX; else WORK=$(mktemp -d /tmp/gpu_check.XXXXXX); fi
((DRY)) || mkdir -p "$WORK/logs" "$WORK/runs"
export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
START=$SECONDS
STOPPED=0

say() { echo "== $*"; }
record() { ((DRY)) || printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/steps.tsv"; }

# step NAME GROUP SIZE CAP OUTDIR COMMAND...: run COMMAND under timeout, its output to logs/NAME.log
step() {
  local name=$1 group=$2 size=$3 cap=$4 out=$5
  shift 5
  if [[ -n $ONLY && $group != setup && ! $name =~ $ONLY ]]; then  # setup steps always run
    record "$name" "$group" "$size" skipped "not in --only" "$out" "-"
    return 0
  fi
  if ((DRY)); then
    echo "timeout -k 10 $cap $(printf '%q ' "$@")"
    return 0
  fi
  local left=$((BUDGET - (SECONDS - START)))
  if ((STOPPED || left < 20)); then
    record "$name" "$group" "$size" skipped "out of time" "$out" "-"
    say "$name: skipped, out of time"
    return 0
  fi
  ((cap > left)) && cap=$left
  local began=$SECONDS rc
  timeout -k 10 "$cap" "$@" >"$WORK/logs/$name.log" 2>&1
  rc=$?
  record "$name" "$group" "$size" "$rc" "$((SECONDS - began))" "$out" "logs/$name.log"
  say "$name: exit $rc in $((SECONDS - began)) s"
  ((rc)) && tail -n 5 "$WORK/logs/$name.log"
  return $rc
}

# executor NAME GROUP SIZE CAP [executor flags]: one run of two ranks, its outputs in runs/NAME
executor() {
  local name=$1 group=$2 size=$3 cap=$4
  shift 4
  local out=-
  local args=("$@")
  if [[ $group == run ]]; then out=runs/$name; args+=(--out "$WORK/$out"); fi
  step "$name" "$group" "$size" "$cap" "$out" "$MPIEXEC" -n 2 "$PY" -m executor "${DEVICE[@]}" --timeout 60 "${args[@]}"
}

finish() {
  ((DRY)) && return 0
  trap - EXIT INT TERM
  cp "$ROOT/.whl/"*.txt "$WORK/" 2>/dev/null
  "$PY" bench/gpu_summary.py "$WORK" >"$WORK/gpu_check.md" 2>"$WORK/logs/summary.log" \
    || python3 bench/gpu_summary.py "$WORK" >"$WORK/gpu_check.md" 2>>"$WORK/logs/summary.log"
  mkdir -p "$OUT"
  cp "$WORK/gpu_check.md" "$OUT/gpu_check.md"
  tar -czf "$OUT/gpu_check.tar.gz" -C "$(dirname "$WORK")" "$(basename "$WORK")"
  cat "$OUT/gpu_check.md"
  say "wrote $OUT/gpu_check.md and $OUT/gpu_check.tar.gz ($(du -k "$OUT/gpu_check.tar.gz" | cut -f1) KiB) in $((SECONDS - START)) s"
}
trap 'STOPPED=1; finish; exit 130' INT TERM
trap finish EXIT

# --- install (the GPU machine: no network; its python3 holds torch, numpy, pandas, matplotlib)
if ((!SMOKE)); then
  source "$ROOT/bench/gpu_env.sh"
  step install setup - 120 - "$PY" "${PIP_INSTALL[@]}" "$PREFIX" "$ROOT"/.whl/*.whl || exit 1
  if ((DRY)); then
    echo "wheels_env $PREFIX $ROOT  # bench/gpu_env.sh: PYTHONPATH, MPI4PY_LIBMPI, LD_LIBRARY_PATH, PATH; mpiexec"
  elif ! wheels_env "$PREFIX" "$ROOT"; then
    echo "gpu_check: the wheels in .whl/ installed no mpi4py, libmpi or mpiexec under $PREFIX" >&2
    exit 1
  fi
  step gpu setup - 30 - sh -c "nvidia-smi --query-gpu=name,driver_version,compute_mode,memory.total,pstate,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >'$WORK/nvidia-smi.csv' || nvidia-smi"
  step machine-mpi4py setup - 30 - sh -c "env -u PYTHONPATH -u MPI4PY_LIBMPI -u LD_LIBRARY_PATH $PY -c \"import importlib.metadata as m; print('mpi4py', m.version('mpi4py'))\" >'$WORK/machine-mpi4py.txt' 2>&1; env -u PYTHONPATH -u MPI4PY_LIBMPI -u LD_LIBRARY_PATH $PY -c \"from mpi4py import MPI; print('loads', MPI.Get_library_version().splitlines()[0])\" >>'$WORK/machine-mpi4py.txt' 2>&1 || echo 'imports no MPI by itself' >>'$WORK/machine-mpi4py.txt'"
  step cuda setup - 60 - "$PY" -c "import torch, mpi4py, simpy; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), mpi4py.__file__)" \
    || { echo "gpu_check: torch sees no GPU or the wheels do not import; see logs/cuda.log" >&2; exit 1; }
fi

# --- the transfer micro-benchmark and the preflight facts of each rank
step transfer bench - 90 - "$MPIEXEC" -n 2 "$PY" bench/transfer_bench.py "${BENCH[@]}" --out "$WORK/transfer.json"

# --- correctness and the small size (default MLP)
for s in 1f1b zb-h1; do
  executor "check-small-$s" check small 90 --schedule "$s" --microbatches $M "${SMALL[@]}" --dtype float32 --check
done
for s in 1f1b gpipe zb-h1; do
  executor "small-$s" run small 75 --schedule "$s" --microbatches $M "${SMALL[@]}" --steps $STEPS --inflation
done

# --- the large size: one profile, then every built-in schedule predicted from it and measured
step profile profile large 150 profile "$MPIEXEC" -n 2 "$PY" -m executor profile "${DEVICE[@]}" --timeout 60 \
  "${LARGE[@]}" --chunks 1,2 --microbatches $M --repeats $REPEATS --out "$WORK/profile"
COSTS=()
if ((DRY)) || [[ -f $WORK/profile/costs.json ]]; then COSTS=(--costs "$WORK/profile/costs.json" --canary); fi
NAMES=$(python3 -c "import schedules; print(' '.join(schedules.names()))" 2>/dev/null \
  || "$PY" -c "import schedules; print(' '.join(schedules.names()))")
for s in $NAMES; do  # zb-1p, zb-2p and zb-auto among them, built for the profile's costs
  extra=()
  case $s in 1f1b|gpipe|zb-h1) extra=(--inflation) ;; esac
  executor "large-$s" run large 75 --schedule "$s" --microbatches $M "${LARGE[@]}" --steps $STEPS "${COSTS[@]}" "${extra[@]}"
done
executor large-1f1b-blocking run large 75 --schedule 1f1b --microbatches $M "${LARGE[@]}" --steps $STEPS --comm blocking "${COSTS[@]}"
executor large-1f1b-boundary run large 75 --schedule 1f1b --microbatches $M "${LARGE[@]}" --steps $STEPS --progress boundary "${COSTS[@]}"

# --- correctness at the large size last: the single-process oracle runs on each rank's CPU
for s in 1f1b zb-h1; do
  executor "check-large-$s" check large 120 --schedule "$s" --microbatches $M "${LARGE[@]}" --dtype float32 --check
done
((DRY)) && echo "$(printf '%q ' "$PY") bench/gpu_summary.py $WORK > $WORK/gpu_check.md; tar -czf $OUT/gpu_check.tar.gz -C /tmp $(basename "$WORK"); cp $WORK/gpu_check.md $OUT/"
exit 0
