"""Real pipeline executor: the lowered op lists of :mod:`schedules`, run under mpiexec with
mpi4py and PyTorch, with measured traces set beside the simulator's prediction.

    mpiexec -n 4 python -m executor --schedule 1f1b --microbatches 8

The parts, one folder each, in layers (each imports only the ones below it):

* :mod:`executor.results` (top): what a finished run means.
  :mod:`~executor.results.predict` (the fit, the profile's prediction and its error
  split), :mod:`~executor.results.report` (output files, the printed table),
  :mod:`~executor.results.held` (measured and predicted memory),
  :mod:`~executor.results.dispatch` (host time around ops), :mod:`~executor.results.device`,
  :mod:`~executor.results.profile` (``python -m executor profile``, made of runs).
* :mod:`executor.engine`: the run. :mod:`~executor.engine.plan` (every check before the
  first message), :mod:`~executor.engine.runtime` (one rank's working parts),
  :mod:`~executor.engine.interpreter` (dispatch table and one loop),
  :mod:`~executor.engine.faults` (the testing aids --fail-rank and --stall-rank),
  :mod:`~executor.engine.steps` (warm-up, timed steps, --check, gathering),
  :mod:`~executor.engine.watchdog` (a hung step ends the job),
  :mod:`~executor.engine.probes` (the machine's measurements for the profile).
* :mod:`executor.record`: the instruments a run carries. :mod:`~executor.record.timing`
  (clocks and rows), :mod:`~executor.record.alone` (ops timed alone inside a run),
  :mod:`~executor.record.plain` (the same ops in a plain process: the yardstick),
  :mod:`~executor.record.canary` (the machine's drift), :mod:`~executor.record.cputime`.
* :mod:`executor.transport`: how data moves. :mod:`~executor.transport.wire` (tensors as
  MPI buffers), :mod:`~executor.transport.p2p` (the two semantics),
  :mod:`~executor.transport.tags`, :mod:`~executor.transport.progress` (the progress
  policies), :mod:`~executor.transport.parallel` (pipeline x data parallel, the gradient
  all-reduce), :mod:`~executor.transport.background` (the daemon thread the progress
  policy and the watchdog each run).
* :mod:`executor.compute` (bottom): what computes. :mod:`~executor.compute.model`
  (workload, stage partition and shapes), :mod:`~executor.compute.stage` (F, B, I, W),
  :mod:`~executor.compute.memory` (activation bytes held), :mod:`~executor.compute.oracle`
  (the single-process reference of --check).

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
