"""Where a sweep's simulations run: in this process, in a process pool, or on every MPI rank.

    with open_workers(n) as workers:
        if workers is None:      # an MPI rank that served jobs for rank 0: nothing left to do
            return 0
        results = workers.map(simulate_one, jobs)

Under ``mpiexec -n N python -m ...`` (detected from the launcher's environment, PMI_SIZE
for MPICH's hydra or OMPI_COMM_WORLD_SIZE for Open MPI) the jobs go through
``mpi4py.futures.MPICommExecutor``: rank 0 runs the program and hands out jobs, ranks
1..N-1 only run jobs, across nodes if the ranks are. Otherwise ``n`` > 1 uses a
``concurrent.futures.ProcessPoolExecutor`` and ``n`` = 1 runs in this process. Results
always come back in job order, so every mode gives the same table.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

__all__ = ["Workers", "open_workers", "mpi_world_size", "default_workers"]

T = TypeVar("T")
R = TypeVar("R")


def mpi_world_size() -> int:
    """Ranks of the MPI job this process was started in (1 outside mpiexec)."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def default_workers() -> int:
    return os.cpu_count() or 1


class Workers:
    """A map over jobs, in order, with an optional progress bar on stderr."""

    def __init__(self, mode: str, executor: Executor | None = None, size: int = 1):
        self.mode, self.size, self._executor = mode, size, executor

    def map(self, fn: Callable[[T], R], jobs: Sequence[T], progress: bool = False, desc: str = "simulate") -> list[R]:
        bar = tqdm(total=len(jobs), desc=desc, disable=not progress, file=sys.stderr)
        with bar:
            if self._executor is None:
                results = []
                for job in jobs:
                    results.append(fn(job))
                    bar.update()
                return results
            chunk = max(1, len(jobs) // (4 * self.size))
            results = []
            for result in self._executor.map(fn, jobs, chunksize=chunk):
                results.append(result)
                bar.update()
            return results

    def __repr__(self) -> str:
        return f"Workers({self.mode}, {self.size})"


@contextmanager
def open_workers(workers: int | None = None) -> Iterator[Workers | None]:
    """Workers for ``workers`` processes (None: the machine's cores; ignored under MPI,
    where every rank works). Yields None on MPI ranks other than 0 once they are done."""
    size = mpi_world_size()
    if size > 1:
        from mpi4py import MPI
        from mpi4py.futures import MPICommExecutor

        with MPICommExecutor(MPI.COMM_WORLD, root=0) as executor:
            yield None if executor is None else Workers("mpi", executor, size - 1)
        return
    n = default_workers() if workers is None else workers
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    if n == 1:
        yield Workers("serial")
        return
    with ProcessPoolExecutor(max_workers=n) as executor:
        yield Workers("pool", executor, n)
