"""How large a schedule this machine can hold, checked before anything is built.

A schedule is held as ops, and every consumer keeps a few things per op: the IR's
``Op`` records, the lowered lists, the validator's keys, the dry run's times (the
simulator's and the executor's own per-op state on top). So the bound on a size is
memory per op times the ops the size makes, against the memory this process may still
allocate (:func:`cliguard.memory_available`: MemAvailable, a cgroup limit, ``ulimit -v``).
Nothing else caps a size: a machine with more memory takes more.

The ops a size makes are counted before the schedule exists (:func:`lowered_ops`), an
upper bound; the bytes per op are measured, peak resident memory of a whole run over
its lowered ops, the largest over every builder, by::

    python -m schedules.measure          # prints each builder's figure and the maximum

(see :data:`BYTES_PER_OP`). The figure of the validator is used by :func:`schedules.build`
and :func:`schedules.load_csv`; a command that keeps more per op (the schedules CLI's
grid, the simulator) checks its own figure before calling them.
"""

from __future__ import annotations

from cliguard import memory_available, short_number as number, too_large

from .ir import ScheduleError

__all__ = ["BYTES_PER_OP", "GRID_BYTES_PER_CELL", "lowered_ops", "check_fits", "max_ops", "number"]

BYTES_PER_OP = 300
"""Peak bytes per lowered op of a build and a ``blocking`` validation (the heavier
semantics: the lowering's planning run), per op of :func:`lowered_ops`: the largest
measured over six builders is 280 (zbv, p = 16, m = 768; 284 at p = 32, m = 4096),
rounded up to the hundred. ``python -m schedules.measure`` (its ``validate`` column;
2026-12-04, Python 3.11). The whole CLI peaks at the same figure: its grid is made after
the validation's peak."""

GRID_BYTES_PER_CELL = 160
"""Peak bytes per cell (ranks x steps) of the step x rank grid ``python -m schedules``
prints: 97-114 for most builders, 158 for dualpipev (its overlapped pairs print long),
measured by ``python -m schedules.measure``. Checked for a file's grid, whose cells can
outnumber its ops (one long rank among many short ones)."""


def lowered_ops(stages: int, microbatches: int) -> int:
    """At most how many ops a built schedule holds once lowered: per stage and microbatch
    at most three compute ops (F, I and W) and the SEND and RECV of its forward and of its
    backward transfer, plus one REDUCE_GRAD per stage."""
    return 7 * stages * microbatches + stages


def max_ops(bytes_per_op: int = BYTES_PER_OP) -> int:
    """How many ops at ``bytes_per_op`` the memory available now holds."""
    return memory_available() // bytes_per_op


def check_fits(what: str, ops: int, bytes_per_op: int = BYTES_PER_OP, unit: str = "op",
               measured_by: str = "python -m schedules.measure") -> None:
    """Raise :class:`ScheduleError` in one line if ``ops`` items at ``bytes_per_op`` each
    need more memory than this process may still allocate. The line names the size, the
    bound and the command that measured the figure (:func:`cliguard.too_large`)."""
    refusal = too_large(what, ops, bytes_per_op, unit=unit, measured_by=measured_by)
    if refusal is not None:
        raise ScheduleError(refusal)

