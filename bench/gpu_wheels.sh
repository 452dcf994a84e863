#!/usr/bin/env bash
# Fill .whl/ with the wheels bench/gpu_check.sh installs on the GPU machine, which has no
# network: run it here, where pip reaches PyPI, then carry .whl with the call.
#
#   bash bench/gpu_wheels.sh [--rehearse PYTHON3.12]
#
# The GPU machine's python3 is Python 3.12 (/opt/torch/.venv, KINDS.md) and already holds
# torch, numpy, pandas, matplotlib and tqdm. It lacks MPICH and SimPy; it has an mpi4py of
# its own, but nothing tells which MPI that one was built for or whether it finds one,
# so the same mpi4py as this project's .venv is carried too (its wheel loads the libmpi
# that MPI4PY_LIBMPI names: the mpich wheel's). The project itself travels as the working
# tree and goes on PYTHONPATH. Exact versions: those this .venv runs the test suite with.
#
# --rehearse PY installs the wheels the way gpu_check.sh does, with PY (a Python 3.12
# here, e.g. pyenv's), into a scratch prefix, and runs a two-rank mpi4py job with the
# carried mpiexec: the install and the MPI start-up proven before the lease.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WHEELS=(mpich==5.0.2 mpi4py==4.1.2 simpy==4.1.2)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux_2_5_x86_64 manylinux1_x86_64)

rm -rf .whl
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]/#/--platform=}" -d .whl "${WHEELS[@]}"
(cd .whl && for f in *.whl; do printf '%s\t%s\t%s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)"; done) \
  >.whl/wheels.txt
cat .whl/wheels.txt
total=$(du -cb .whl/*.whl | tail -n 1 | cut -f1)
echo "total $((total / 1024)) KiB in $(ls .whl/*.whl | wc -l) wheels (the call's working tree may hold 64 MiB)"

if [[ ${1:-} == --rehearse ]]; then
  py=$2
  prefix=$(mktemp -d /tmp/pipebubble-rehearse.XXXXXX)
  source "$ROOT/bench/gpu_env.sh"
  "$py" "${PIP_INSTALL[@]}" "$prefix" .whl/*.whl
  wheels_env "$prefix" "$ROOT"
  timeout 60 "$MPIEXEC" -n 2 "$py" -c "
import sys, mpi4py, simpy, schedules
from mpi4py import MPI
c = MPI.COMM_WORLD
assert mpi4py.__file__.startswith('$prefix'), mpi4py.__file__
total = c.allreduce(c.Get_rank() + 1)
if c.Get_rank() == 0:
    print(f'rehearsal: Python {sys.version.split()[0]}, mpi4py {mpi4py.__version__} from {mpi4py.__file__},',
          MPI.Get_library_version().splitlines()[0].strip(), f'thread level {MPI.Query_thread()},',
          f'allreduce over 2 ranks {total}, simpy {simpy.__version__}, {len(schedules.names())} schedules')
"
  rm -rf "$prefix"
fi
