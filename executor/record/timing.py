"""Clocks on one time base, and the per-rank record of what each op did when.

Clock alignment (Cristian's algorithm, 1989): rank 0 pings each rank ``rounds`` times;
the rank answers with its ``perf_counter``; with round trip ``rtt`` measured on rank 0,
rank 0's clock read about ``t0 + rtt / 2`` at the moment of that answer, so the rank's
offset is ``t0 + rtt/2 - t_rank``, wrong by at most ``rtt / 2``. The round with the
smallest rtt is kept, and that half round trip is the stated accuracy. (On one node
``perf_counter`` is CLOCK_MONOTONIC, shared by all processes: the offsets come out near
zero, which checks the method.)

On a GPU, compute ops are timed with CUDA events; each step records one reference event
right after a synchronise, so event times map onto the host clock as
``host_ref + elapsed(ref, event)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI
from schedules import Op

from timeline import stream_of

__all__ = ["ClockSync", "sync_clocks", "Recorder"]

_PING, _PONG = 901, 902


@dataclass(frozen=True)
class ClockSync:
    offset: float
    """Add to this rank's perf_counter to get rank 0's time base (s)."""
    error: float
    """Largest half round trip over ranks: the bound on any rank's offset error (s)."""


def sync_clocks(comm: MPI.Comm, rounds: int = 20) -> ClockSync:
    """Measure every rank's clock offset against rank 0 (collective over ``comm``)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    stamp = np.zeros(1)
    table = np.zeros((size, 2))  # per rank: offset, half round trip
    comm.Barrier()
    if rank == 0:
        for peer in range(1, size):
            best = (np.inf, 0.0)
            for _ in range(rounds):
                t0 = time.perf_counter()
                comm.Send(stamp, dest=peer, tag=_PING)
                comm.Recv(stamp, source=peer, tag=_PONG)
                t1 = time.perf_counter()
                if t1 - t0 < best[0]:
                    best = (t1 - t0, t0 + (t1 - t0) / 2 - stamp[0])
            table[peer] = (best[1], best[0] / 2)
    else:
        for _ in range(rounds):
            comm.Recv(stamp, source=0, tag=_PING)
            stamp[0] = time.perf_counter()
            comm.Send(stamp, dest=0, tag=_PONG)
    comm.Bcast(table, root=0)
    return ClockSync(offset=float(table[rank, 0]), error=float(table[:, 1].max()))


class Recorder:
    """Rows (step, stage, mb, kind, stream, start, end) of one rank, times in local perf_counter.

    ``stamp``/``resolve`` time compute ops: host clock on CPU, CUDA events on a GPU.
    """

    def __init__(self, cuda: bool = False):
        self._rows: list[tuple] = []
        self._raw: list[tuple] = []  # (step, op, start, end) not yet made rows
        self.step_starts: list[float] = []
        self._cuda = cuda
        self._events: list[tuple] = []  # (stage, mb, kind, start_event, end_event)
        self._ref = None

    def begin_step(self) -> float:
        if self._cuda:
            import torch

            torch.cuda.synchronize()
            self._ref = torch.cuda.Event(enable_timing=True)
            self._ref.record()
        start = time.perf_counter()
        self.step_starts.append(start)
        return start

    def add(self, op: Op, start: float, end: float) -> None:
        """Note ``op``'s times; the row is made when :attr:`rows` is read (this runs after
        every op, with the interpreter's caches cold from compute, so it only appends)."""
        self._raw.append((len(self.step_starts) - 1, op, start, end))

    def add_row(self, kind: str, stage: int, mb: int, start: float, end: float) -> None:
        self._flush()
        step = len(self.step_starts) - 1
        self._rows.append((step, stage, mb, kind, stream_of(kind), start, end))

    @property
    def rows(self) -> list[tuple]:
        """(step, stage, mb, kind, stream, start, end), one per op recorded."""
        self._flush()
        return self._rows

    def _flush(self) -> None:
        for step, op, start, end in self._raw:
            kind = op.kind.value
            self._rows.append((step, op.stage, -1 if op.mb is None else op.mb, kind, stream_of(kind), start, end))
        self._raw.clear()

    def stamp(self):
        if self._cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def time_call(self, fn, *args) -> float:
        """Seconds ``fn(*args)`` takes, by the same clock as the run's compute ops."""
        if not self._cuda:
            start = time.perf_counter()
            fn(*args)
            return time.perf_counter() - start
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def add_compute(self, op: Op, start, end) -> None:
        if self._cuda:
            self._events.append((op, start, end))
        else:
            self.add(op, start, end)

    def end_step(self) -> None:
        """Resolve this step's CUDA events onto the host clock."""
        if not self._cuda:
            return
        import torch

        torch.cuda.synchronize()
        host_ref = self.step_starts[-1]
        for op, start, end in self._events:
            self.add(op, host_ref + self._ref.elapsed_time(start) / 1e3, host_ref + self._ref.elapsed_time(end) / 1e3)
        self._events.clear()

    def clear(self) -> None:
        self._rows.clear()
        self._raw.clear()
        self.step_starts.clear()
