"""Pipeline schedules as per-rank op lists: the IR, the builders, lowering and validation.

    >>> import schedules
    >>> s = schedules.build("1f1b", ranks=4, microbatches=8)
    >>> lowered = schedules.validate(s, comm_mode="blocking")   # a checked Lowered
    >>> print(schedules.format_grid(lowered))                # doctest: +SKIP

This package imports nothing else of the project: the simulator and the executor are two
interpreters of what it produces.
"""

from . import analytic
# Registration order is the order names() lists: simplest schedule first.
from . import naive, gpipe, one_f_one_b, interleaved, looped_bfs, zb_h1, zb_h2, interleaved_zb, zbv  # noqa: F401,I001
from . import dualpipev, v_shape, zb_auto  # noqa: F401,I001  (register builders)
from .csvio import load_csv, write_csv
from .dryrun import Deadlock, DryRun, dry_run
from .grid import format_grid
from .ir import COMM_KINDS, COMM_MODES, COMPUTE_KINDS, Op, OpKind, Schedule, ScheduleError, Transfer, batch_ends
from .lowered import Lowered
from .registry import StageCosts, build, default_chunks, names, register, spec
from .validate import validate, validate_with
from .zb_auto import synthesize

__all__ = [
    "Op", "OpKind", "Schedule", "ScheduleError", "Transfer", "COMPUTE_KINDS", "COMM_KINDS", "COMM_MODES", "Lowered",
    "build", "names", "register", "spec", "StageCosts", "default_chunks", "validate", "validate_with", "dry_run",
    "DryRun", "Deadlock", "load_csv", "write_csv", "format_grid", "batch_ends", "analytic", "synthesize",
]
