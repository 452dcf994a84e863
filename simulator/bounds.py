"""What the simulator keeps per op, measured: the bounds its commands check before work.

A simulation holds, per lowered op, what :mod:`schedules.bounds` counts for a validation
plus the encoded columns, the SimPy model's times and the trace's arrays; each output
(``--csv``, ``--trace``, ``--gantt``) adds its own per trace row. So a run's bound is
``lowered ops x (bytes of the run + bytes of each output asked for)`` against
:func:`cliguard.memory_available`, checked before anything is built. Figures are the
peak resident memory of the whole command over its trace rows, the largest over several
schedules, measured by::

    python -m simulator.measure       # prints every figure and the schedules behind it

Files a user hands in are bounded by their size: a trace CSV or a costs.json can grow
several times over once parsed (pandas' columns, Python's lists and dicts), by the
factors below, measured on the worst shapes (short cells, empty lists).
"""

from __future__ import annotations

from schedules.bounds import check_fits, lowered_ops

__all__ = ["MEASURED", "BYTES_PER_OP", "OUTPUT_BYTES_PER_OP", "SWEEP_BYTES_PER_POINT", "TRACE_BYTES_PER_BYTE",
           "JSON_BYTES_PER_BYTE", "check_run"]

MEASURED = "python -m simulator.measure"  # the command behind every figure below

BYTES_PER_OP = 350
"""Peak bytes per lowered op (of :func:`schedules.bounds.lowered_ops`) of ``python -m
simulator`` without outputs: build, the model's run standing in for the dry run, the
summary. Largest measured 321 (zb-h1 and zbv under ``blocking``; 237-291 under ``async``,
with or without link, memory and node-sharing costs), rounded up to the next 50;
``python -m simulator.measure run`` (2026-12-04, Python 3.11)."""

OUTPUT_BYTES_PER_OP = {"--csv": 0, "--trace": 900, "--gantt": 300}
"""Peak bytes per lowered op each output adds to the run's (``python -m simulator.measure
outputs``): the trace CSV nothing (measured -78 and -90: the frame and its text are made
once the model is freed, below its peak), the Perfetto trace 749-894 (a dict per event),
the Gantt chart 221-257; rounded up to the next 50."""

SWEEP_BYTES_PER_POINT = 1300
"""Bytes per grid point of a sweep (its job, its row, the table): 1207 measured over 19,200
points of tiny schedules, ``python -m simulator.measure sweep``; rounded up."""

TRACE_BYTES_PER_BYTE = 12
"""Peak bytes per byte of a trace CSV read by ``--costs-from`` (pandas, the checks, the
calibration): 11 for the shortest cells (``0,0,0,F,compute,0,1``), ``python -m
simulator.measure files``."""

JSON_BYTES_PER_BYTE = 30
"""Peak bytes per byte of a costs.json: 27 for ``[{},{},...]`` and ``[[],[],...]`` (6 and 12
for lists of 0 and 0.5), ``python -m simulator.measure files``."""


def check_run(what: str, stages: int, microbatches: int, world: int = 0, outputs=(), workers: int = 1) -> None:
    """Raise (one line, :class:`schedules.ScheduleError`) unless ``workers`` simulations of
    ``stages`` x ``microbatches`` with ``world`` world ranks (ranks x dp) and ``outputs``
    (``--csv``, ``--trace``, ``--gantt``) fit in the memory available."""
    per_op = BYTES_PER_OP + sum(OUTPUT_BYTES_PER_OP[flag] for flag in outputs)
    ops = lowered_ops(stages, microbatches) + world
    label = what if workers == 1 else f"{what}, {workers} at once (--workers)"
    check_fits(label, ops * workers, per_op, measured_by=MEASURED)
