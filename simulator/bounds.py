"""What the simulator keeps per op, measured: the bounds its commands check before work.

A simulation holds, per lowered op, what :mod:`schedules.bounds` counts for a validation
plus the encoded columns, the SimPy model's times and the trace's arrays; each output
(``--csv``, ``--trace``, ``--gantt``) adds its own per trace row. So a run's bound is
``lowered ops x (bytes of the run + bytes of each output asked for)`` against
:func:`cliguard.memory_available`, checked before anything is built. Figures are the
peak resident memory of the whole command over its trace rows, the largest over several
schedules, measured by::

    python -m simulator.bounds        # prints every figure and the schedules behind it

Files a user hands in are bounded by their size: a trace CSV or a costs.json can grow
several times over once parsed (pandas' columns, Python's lists and dicts), by the
factors below, measured on the worst shapes (short cells, empty lists).
"""

from __future__ import annotations

from schedules.bounds import check_fits, lowered_ops

__all__ = ["BYTES_PER_OP", "OUTPUT_BYTES_PER_OP", "SWEEP_BYTES_PER_POINT", "TRACE_BYTES_PER_BYTE",
           "JSON_BYTES_PER_BYTE", "check_run"]

BYTES_PER_OP = 1500
"""Peak bytes per lowered op of ``python -m simulator`` without outputs (build, the model's
run standing in for the dry run, summary); ``python -m simulator.bounds``."""

OUTPUT_BYTES_PER_OP = {"--csv": 400, "--trace": 1500, "--gantt": 4000}
"""Peak bytes per trace row that each output adds (pandas frame and CSV text; Trace Event
dicts and JSON text; matplotlib patches and the image)."""

SWEEP_BYTES_PER_POINT = 2000
"""Bytes per grid point of a sweep: its job, its row, the table."""

TRACE_BYTES_PER_BYTE = 40
"""Peak bytes per byte of a trace CSV read by ``--costs-from`` (pandas, then calibration)."""

JSON_BYTES_PER_BYTE = 30
"""Peak bytes per byte of a costs.json (``[{},{},...]``: a dict per three characters)."""


def check_run(what: str, stages: int, microbatches: int, world: int = 0, outputs=(), workers: int = 1) -> None:
    """Raise (one line, :class:`schedules.ScheduleError`) unless ``workers`` simulations of
    ``stages`` x ``microbatches`` with ``world`` world ranks (ranks x dp) and ``outputs``
    (``--csv``, ``--trace``, ``--gantt``) fit in the memory available."""
    per_op = BYTES_PER_OP + sum(OUTPUT_BYTES_PER_OP[flag] for flag in outputs)
    ops = lowered_ops(stages, microbatches) + world
    label = what if workers == 1 else f"{what}, {workers} at once (--workers)"
    check_fits(label, ops * workers, per_op, measured_by="python -m simulator.bounds")
