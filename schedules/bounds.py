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

    python -m schedules.bounds          # prints each builder's figure and the maximum

(see :data:`BYTES_PER_OP`). The figure of the validator is used by :func:`schedules.build`
and :func:`schedules.load_csv`; a command that keeps more per op (the schedules CLI's
grid, the simulator) checks its own figure before calling them.
"""

from __future__ import annotations

from cliguard import memory_available, short_number as number, too_large

from .ir import ScheduleError

__all__ = ["BYTES_PER_OP", "GRID_BYTES_PER_CELL", "lowered_ops", "check_fits", "max_ops", "number"]

BYTES_PER_OP = 700
"""Peak bytes per lowered op of a build and a ``blocking`` validation (the heavier
semantics: the lowering's planning run), the largest over the builders; measured on
2026-12-04 by ``python -m schedules.bounds`` (its ``validate`` column)."""

GRID_BYTES_PER_CELL = 250
"""Peak bytes per printed cell (steps x ranks) of ``python -m schedules``'s grid, on top of
the validation; measured by ``python -m schedules.bounds`` (its ``cli`` column)."""


def lowered_ops(stages: int, microbatches: int) -> int:
    """At most how many ops a built schedule holds once lowered: per stage and microbatch
    at most three compute ops (F, I and W) and the SEND and RECV of its forward and of its
    backward transfer, plus one REDUCE_GRAD per stage."""
    return 7 * stages * microbatches + stages


def max_ops(bytes_per_op: int = BYTES_PER_OP) -> int:
    """How many ops at ``bytes_per_op`` the memory available now holds."""
    return memory_available() // bytes_per_op


def check_fits(what: str, ops: int, bytes_per_op: int = BYTES_PER_OP, unit: str = "op",
               measured_by: str = "python -m schedules.bounds") -> None:
    """Raise :class:`ScheduleError` in one line if ``ops`` items at ``bytes_per_op`` each
    need more memory than this process may still allocate. The line names the size, the
    bound and the command that measured the figure (:func:`cliguard.too_large`)."""
    refusal = too_large(what, ops, bytes_per_op, unit=unit, measured_by=measured_by)
    if refusal is not None:
        raise ScheduleError(refusal)
