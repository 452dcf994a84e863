"""Real pipeline executor: the lowered op lists of :mod:`schedules`, run under mpiexec with
mpi4py and PyTorch, with measured traces set beside the simulator's prediction.

    mpiexec -n 4 python -m executor --schedule 1f1b --microbatches 8

The parts, one folder each:

* :mod:`executor.engine`: the run. :mod:`~executor.engine.plan` (every check before the
  first message), :mod:`~executor.engine.runtime` (one rank's working parts),
  :mod:`~executor.engine.interpreter` (dispatch table and one loop),
  :mod:`~executor.engine.steps` (warm-up, timed steps, --check, gathering),
  :mod:`~executor.engine.watchdog` (a hung step ends the job).
* :mod:`executor.transport`: how data moves. :mod:`~executor.transport.wire` (tensors as
  MPI buffers), :mod:`~executor.transport.p2p` (the two semantics),
  :mod:`~executor.transport.tags`, :mod:`~executor.transport.progress` (the progress
  policies), :mod:`~executor.transport.parallel` (pipeline x data parallel, the gradient
  all-reduce).
* :mod:`executor.compute`: what computes. :mod:`~executor.compute.model` (workload and
  stage partition), :mod:`~executor.compute.stage` (F, B, I, W),
  :mod:`~executor.compute.memory` (activation bytes held), :mod:`~executor.compute.oracle`
  (the single-process reference of --check).
* :mod:`executor.record`: what is recorded. :mod:`~executor.record.timing` (clocks and
  rows), :mod:`~executor.record.alone` (ops timed alone), :mod:`~executor.record.held`
  (measured and predicted memory), :mod:`~executor.record.predict` and
  :mod:`~executor.record.report` (the simulator's prediction, output files).

:mod:`~executor.config` holds the options, :mod:`~executor.launch` starts mpiexec from
Python. Importing this package does not start MPI (``--progress mpich`` must set MPICH's
environment first); :func:`run` does.
"""

from .config import RunConfig, UsageError, parse_args

__all__ = ["RunConfig", "UsageError", "parse_args", "run", "RunResult"]


def __getattr__(name: str):
    if name in ("run", "RunResult"):  # imported on use: it starts MPI
        from .engine import steps

        return getattr(steps, name)
    raise AttributeError(f"module 'executor' has no attribute {name!r}")
