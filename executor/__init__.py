"""Real pipeline executor: the lowered op lists of :mod:`schedules`, run under mpiexec with
mpi4py and PyTorch, with measured traces set beside the simulator's prediction.

    mpiexec -n 4 python -m executor --schedule 1f1b --microbatches 8

Modules, by meaning: :mod:`~executor.config` (options), :mod:`~executor.model` (workload,
stage partition), :mod:`~executor.setup` (checks before any message), :mod:`~executor.stage`
(F, B, I, W), :mod:`~executor.wire`, :mod:`~executor.progress` and :mod:`~executor.p2p`
(communication), :mod:`~executor.parallel` (pipeline x data parallel), :mod:`~executor.interpreter`
(dispatch table and loop), :mod:`~executor.timing` (clocks, records), :mod:`~executor.run`,
:mod:`~executor.check` (single-process oracle), :mod:`~executor.predict` and
:mod:`~executor.report` (predicted vs measured, output files); :mod:`~executor.launch` (mpiexec
from Python, for the demo, notebooks, benches and tests).
"""

from .config import RunConfig, UsageError, parse_args
from .engine.steps import RunResult, run

__all__ = ["RunConfig", "UsageError", "parse_args", "run", "RunResult"]
