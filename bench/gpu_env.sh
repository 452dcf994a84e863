# Sourced by bench/gpu_check.sh and bench/gpu_wheels.sh: how the carried wheels are
# installed on the GPU machine, and what a process there needs to find them. One copy,
# so that gpu_wheels.sh --rehearse tries exactly what the lease will run.
#
# pip's --prefix, not --target: --target drops the mpich wheel's lib/ (libmpi and its
# libfabric/UCX), keeping only bin/ and the packages. --ignore-installed: the machine's
# venv has an mpi4py of its own, and pip would skip a wheel of a version already there.
# The mpi4py wheel has no rpath to libmpi: it loads the library MPI4PY_LIBMPI names
# (else the first libmpi in its Python's prefix or the loader's path, which need not be
# the mpich wheel's).
PIP_INSTALL=(-m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed --prefix)

# wheels_env PREFIX ROOT: export PYTHONPATH (the wheels, then the repository),
# MPI4PY_LIBMPI, LD_LIBRARY_PATH and PATH for what is installed under PREFIX, and set
# MPIEXEC; fails when PREFIX holds no mpi4py, libmpi or mpiexec.
wheels_env() {
  local prefix=$1 root=$2 site libmpi
  site=$(find "$prefix" -path '*/mpi4py/__init__.py' 2>/dev/null | head -n 1)
  libmpi=$(find "$prefix" -name libmpi.so.12 2>/dev/null | head -n 1)
  MPIEXEC=$(find "$prefix" -name mpiexec -type f 2>/dev/null | head -n 1)
  [[ -n $site && -n $libmpi && -x $MPIEXEC ]] || return 1
  site=$(dirname "$(dirname "$site")")
  export PYTHONPATH=$site:$root${PYTHONPATH:+:$PYTHONPATH} MPI4PY_LIBMPI=$libmpi
  export LD_LIBRARY_PATH=$(dirname "$libmpi")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PATH=$(dirname "$MPIEXEC"):$PATH
}
