"""Each compute op's CPU time beside its wall time, for ranks that outnumber their cores.

On a node whose ranks outnumber its cores, an op's wall time includes the time its rank
spent off its core, waiting for one (:func:`executor.engine.probes.scheduler` measures
it). The simulator models that wait itself (:mod:`simulator.slicing`), so a profile taken
there needs each op's own work: the thread's CPU time over the op
(``CLOCK_THREAD_CPUTIME_ID``, about half a microsecond to read here, once at each end of
an op). :class:`CpuRecorder` stamps both clocks where :class:`Recorder` stamps one; the
rows stay wall-clock rows, and :attr:`cpu` holds (step, stage, mb, kind, seconds).
"""

from __future__ import annotations

import time

from schedules import Op

from .timing import Recorder

__all__ = ["CpuRecorder"]


class CpuRecorder(Recorder):
    """A CPU :class:`Recorder` that also keeps each compute op's thread CPU time."""

    def __init__(self) -> None:
        super().__init__(cuda=False)
        self.cpu: list[tuple] = []

    def stamp(self):
        return time.perf_counter(), time.thread_time()

    def add_compute(self, op: Op, start, end) -> None:
        (wall_start, cpu_start), (wall_end, cpu_end) = start, end
        self.add(op, wall_start, wall_end)
        self.cpu.append((len(self.step_starts) - 1, op.stage, op.mb, op.kind.value, cpu_end - cpu_start))

    def clear(self) -> None:
        super().clear()
        self.cpu.clear()
