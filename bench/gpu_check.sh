#!/usr/bin/env bash
# On a machine with a GPU: install, check exact gradients on CUDA, time 1f1b and gpipe with
# two ranks sharing the GPU, and run the overhead bench. Everything lands under one folder.
#
#   bash bench/gpu_check.sh [OUT]        (default out/gpu-check)
#
# Needs nvidia-smi and a torch that sees CUDA (make install keeps a CUDA torch the machine
# already has: the venv then uses the system site-packages).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu-check}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/steps.log"; }
run() {  # name, command...: output to $out/name.txt, status to the log
  local name=$1; shift
  log "$name: $*"
  "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  log "$name: exit $rc"
  tail -n 12 "$out/$name.txt"
  return $rc
}
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || { log "no nvidia-smi: not a GPU machine"; exit 1; }
run install make install || exit 1
PY=.venv/bin/python
MPI=.venv/bin/mpiexec
run torch-cuda $PY -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))" || exit 1
for s in 1f1b gpipe; do
  run check-$s $MPI -n 2 $PY -m executor --schedule $s --microbatches 8 --device cuda --check --dtype float32
  run timed-$s $MPI -n 2 $PY -m executor --schedule $s --microbatches 8 --device cuda --steps 20 --warmup 5 \
      --inflation --out "$out/run-$s"
done
run overhead $PY bench/executor_overhead.py --steps 10 --runs 3
log "done: $out"
