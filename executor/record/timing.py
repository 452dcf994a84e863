"""Clocks on one time base, and the per-rank record of what each op did when.

Clock alignment (Cristian's algorithm, 1989): rank 0 pings each rank ``rounds`` times;
the rank answers with its ``perf_counter``; with round trip ``rtt`` measured on rank 0,
rank 0's clock read about ``t0 + rtt / 2`` at the moment of that answer, so the rank's
offset is ``t0 + rtt/2 - t_rank``, wrong by at most ``rtt / 2``. The round with the
smallest rtt is kept, and that half round trip is the stated accuracy. (On one node
``perf_counter`` is CLOCK_MONOTONIC, shared by all processes: the offsets come out near
zero, which checks the method.)

On a GPU, compute ops and staging copies are timed with CUDA events; each step records
one reference event on an idle device and waits for it, reading the host clock just
before the record and just after the wait: ``host_ref`` is the midpoint, and event times
map onto the host clock as ``host_ref + elapsed(ref, event)``, wrong by at most half that
bracket (:attr:`Recorder.mapping_errors`, one per step) plus the two clocks' drift over
one step. The bracket costs one event round trip (tens of microseconds) before the
step's start is stamped, outside every op.

Staging copies (:mod:`executor.transport.wire`) are not ops: they are kept apart from the
rows (:attr:`Recorder.copies`), so a SEND's row starts after its device-to-host copy and
the copy has a span of its own. On a GPU the recorder also keeps each step's memory: the
allocator's peak is reset at the step's start, the bytes allocated then are its baseline,
and the peak is read at its end (:class:`DeviceMemory`; the optimizer step after it is
not included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from mpi4py import MPI
from schedules import Op

from timeline import stream_of

__all__ = ["ClockSync", "sync_clocks", "Recorder", "Row", "Copy", "DeviceMemory"]

_PING, _PONG = 901, 902


@dataclass(frozen=True)
class ClockSync:
    offset: float
    """Add to this rank's perf_counter to get rank 0's time base (s)."""
    error: float
    """Largest half round trip over ranks: the bound on any rank's offset error (s)."""


def sync_clocks(world: MPI.Comm, rounds: int = 20) -> ClockSync:
    """Measure every rank's clock offset against rank 0 (collective over ``world``)."""
    rank, size = world.Get_rank(), world.Get_size()
    stamp = np.zeros(1)
    table = np.zeros((size, 2))  # per rank: offset, half round trip
    world.Barrier()
    if rank == 0:
        for peer in range(1, size):
            best = (np.inf, 0.0)
            for _ in range(rounds):
                t0 = time.perf_counter()
                world.Send(stamp, dest=peer, tag=_PING)
                world.Recv(stamp, source=peer, tag=_PONG)
                t1 = time.perf_counter()
                if t1 - t0 < best[0]:
                    best = (t1 - t0, t0 + (t1 - t0) / 2 - stamp[0])
            table[peer] = (best[1], best[0] / 2)
    else:
        for _ in range(rounds):
            world.Recv(stamp, source=0, tag=_PING)
            stamp[0] = time.perf_counter()
            world.Send(stamp, dest=0, tag=_PONG)
    world.Bcast(table, root=0)
    return ClockSync(offset=float(table[rank, 0]), error=float(table[:, 1].max()))


class DeviceMemory:
    """The CUDA caching allocator's counters for one device (the per-step bookkeeping of
    :class:`Recorder` asks only these three things, so a test can hand it any counter)."""

    def __init__(self, device):
        self.device = device

    def reset_peak(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)

    def allocated(self) -> int:
        import torch

        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        import torch

        return torch.cuda.max_memory_allocated(self.device)


class Row(NamedTuple):
    """One op as it ran on one rank: the trace schema's columns but the rank, times in the
    rank's own perf_counter seconds."""

    step: int
    stage: int
    mb: int
    kind: str
    stream: str
    start: float
    end: float


class Copy(NamedTuple):
    """One staging copy on one rank (kind D2H before a SEND, H2D after a RECV)."""

    step: int
    stage: int
    mb: int
    kind: str
    bytes: int
    start: float
    end: float


class Recorder:
    """:class:`Row` s of one rank, times in local perf_counter.

    ``stamp``/``resolve`` time compute ops: host clock on CPU, CUDA events with ``cuda``
    (real compute on a GPU). ``memory`` (a :class:`DeviceMemory`, on a GPU) adds each
    step's baseline and peak; ``device_clock`` maps events onto the host clock every step
    (staging copies are timed with events on a GPU even when compute sleeps).
    """

    def __init__(self, cuda: bool = False, memory: DeviceMemory | None = None, device_clock: bool | None = None):
        self._rows: list[Row] = []
        self._raw: list[tuple] = []  # (step, op, start, end) not yet made rows: the hot path only appends
        self.step_starts: list[float] = []
        self._cuda = cuda
        self._clock = cuda if device_clock is None else device_clock
        self._events: list[tuple] = []  # (op, start_event, end_event)
        self._copy_events: list[tuple] = []  # (stage, mb, kind, bytes, start_event, end_event)
        self._ref = None
        self._host_ref = 0.0
        self.copies: list[Copy] = []
        """Each staging copy, times in local perf_counter."""
        self.mapping_errors: list[float] = []
        """On a GPU, per step: the bound on the event-to-host-clock mapping (s)."""
        self.memory = memory
        self.memory_steps: list[tuple[int, int]] = []
        """With ``memory``, per step: (bytes allocated at its start, peak bytes during it)."""
        self._baseline = 0

    def begin_step(self) -> float:
        if self.memory is not None:
            self.memory.reset_peak()
            self._baseline = self.memory.allocated()
        if self._clock:
            import torch

            torch.cuda.synchronize()
            self._ref = torch.cuda.Event(enable_timing=True)
            before = time.perf_counter()
            self._ref.record()
            self._ref.synchronize()  # the event has its time now: the host clock brackets it
            after = time.perf_counter()
            self._host_ref = (before + after) / 2
            self.mapping_errors.append((after - before) / 2)
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
        self._rows.append(Row(step, stage, mb, kind, stream_of(kind), start, end))

    def add_copy(self, kind: str, stage: int, mb: int, nbytes: int, span) -> None:
        """A staging copy's span: (start, end) on the host clock, or two CUDA events
        (made times at :meth:`end_step`)."""
        start, end = span
        if isinstance(start, float):
            self.copies.append(Copy(len(self.step_starts) - 1, stage, mb, kind, nbytes, start, end))
        else:
            self._copy_events.append((stage, mb, kind, nbytes, start, end))

    @property
    def rows(self) -> list[Row]:
        """One per op recorded."""
        self._flush()
        return self._rows

    def _flush(self) -> None:
        for step, op, start, end in self._raw:
            kind = op.kind.value
            self._rows.append(Row(step, op.stage, -1 if op.mb is None else op.mb, kind, stream_of(kind), start, end))
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
        """Resolve this step's CUDA events onto the host clock; note its memory peak."""
        if self._clock:
            import torch

            torch.cuda.synchronize()
            ref, host_ref = self._ref, self._host_ref
            for op, start, end in self._events:
                self.add(op, host_ref + ref.elapsed_time(start) / 1e3, host_ref + ref.elapsed_time(end) / 1e3)
            step = len(self.step_starts) - 1
            for stage, mb, kind, nbytes, start, end in self._copy_events:
                self.copies.append(Copy(step, stage, mb, kind, nbytes, host_ref + ref.elapsed_time(start) / 1e3,
                                    host_ref + ref.elapsed_time(end) / 1e3))
            self._events.clear()
            self._copy_events.clear()
        if self.memory is not None:
            self.memory_steps.append((self._baseline, self.memory.peak()))

    def clear(self) -> None:
        self._rows.clear()
        self._raw.clear()
        self.step_starts.clear()
        self.copies.clear()
        self.mapping_errors.clear()
        self.memory_steps.clear()
