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

``n`` is capped at the cores this process may run on (:func:`cliguard.usable_cores`),
with a note on stderr: more processes than cores only add forks and memory. Pool
workers ignore Ctrl-C; the parent, on Ctrl-C or any error, cancels what has not started
and ends the workers, instead of waiting for every job. Under MPI, :func:`lead_decides`
lets rank 0 decide something (claim an output) and every rank learn the outcome, so a
refusal ends all ranks at once instead of leaving them waiting for rank 0.
"""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

from cliguard import EXIT_USAGE, UsageError, usable_cores

__all__ = ["Workers", "open_workers", "mpi_world_size", "default_workers", "capped", "lead_decides"]

T = TypeVar("T")
R = TypeVar("R")


def mpi_world_size() -> int:
    """Ranks of the MPI job this process was started in (1 outside mpiexec)."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def default_workers() -> int:
    return usable_cores()


def capped(workers: int, flag: str = "--workers") -> int:
    """``workers`` at most the usable cores, saying so on stderr when it cuts."""
    cores = usable_cores()
    if workers > cores:
        print(f"note: {flag} {workers}: using {cores}, the cores this process may run on", file=sys.stderr)
        return cores
    return workers


def lead_decides(decide: Callable[[], T]) -> T | None:
    """Run ``decide`` on the rank that writes (rank 0 under MPI, else this process) and
    return what it returns; under MPI the other ranks learn whether it raised a
    :class:`UsageError` and then leave with exit code 2 too, silently (rank 0 says why)."""
    if mpi_world_size() == 1:
        return decide()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    outcome, error = None, None
    if comm.Get_rank() == 0:
        try:
            outcome = decide()
        except UsageError as err:
            error = err
    if comm.bcast(None if error is None else str(error), root=0) is not None:
        if error is not None:
            raise error
        raise SystemExit(EXIT_USAGE)
    return outcome


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
    n = capped(n)
    if n == 1:
        yield Workers("serial")
        return
    executor = ProcessPoolExecutor(max_workers=n, initializer=_ignore_interrupts)
    try:
        yield Workers("pool", executor, n)
    except BaseException:
        _stop(executor)
        raise
    executor.shutdown()


def _ignore_interrupts() -> None:
    """In a pool worker: Ctrl-C is the parent's to handle (one line, exit 130), not a
    traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(executor: ProcessPoolExecutor) -> None:
    """Cancel the jobs not started and end the workers, rather than wait for the running ones
    (the pool has no public way to; shutdown forgets its processes, so they are taken first)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()
