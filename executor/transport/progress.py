"""How non-blocking MPI requests make progress while a rank computes: the progress policies.

MPICH moves a large non-blocking transfer only while some MPI call runs on the rank
(rendezvous hand-shakes and the chunked shared-memory copy both need it), so an Isend
posted before a long compute would otherwise wait for the next Wait and no transfer would
overlap compute (REFERENCE.md: 256 MiB beside 75 ms of compute took the sum of both).
Three policies, chosen by ``--progress`` (docs/executor.md and docs/results.md have the
measurements behind the default):

``idle`` (default): no thread. The main thread tests every outstanding request at each
    op boundary (:meth:`Progress.poke`, called by the interpreter), and inside an op only
    where the host is idle while the device computes: a sleeping stage's slices, and on
    a GPU the wait for the device before a send (:meth:`executor.transport.wire.Wire.wait`
    polls an event and pokes; the host runs ahead of the device everywhere else, queueing
    kernels, and a RECV's wait pokes anyway). Real compute on a CPU runs bare: there the host is
    the device, a transfer moved mid-op runs on the very core the op is timed on, and
    with MPICH's shared memory here the receiver pulls the data itself (a 16 MiB message
    completed 1.6 ms after its Isend while the sender made no MPI call for 20 ms; the
    send completed only when the receiver called MPI), so a poke inside an op cannot
    overlap anything; it only moves copy work into the op being timed. A poke with
    nothing outstanding is one attribute read; with requests outstanding it is one
    ``Testsome`` (about a microsecond for a handful).
``hooks``: ``idle``, and between the layers of a real stage too (in the forward
    directly, in the backward through a gradient hook on each layer's output): the
    earlier default, kept to compare against; registering the hooks costs compute time.
    On a GPU these pokes come while the layers' kernels are being queued, all within the
    op's first launches, not while they run; the backward's run on autograd's device
    thread (:func:`check_thread_level`).
``boundary``: the same, at op boundaries only (no pokes inside an op): a transfer that
    arrives mid-op waits for the op's end, and on a GPU the host blocks in the wait for
    the device before a send.
``thread``: the earlier design, a daemon thread calling ``Testsome`` every ``interval``
    (200 us). Kept for comparison: its wake-ups take the GIL and the core from the compute
    it runs beside (worst op 1.41x its time alone here: bench/executor_overhead.py).
``mpich``: MPICH's own asynchronous progress thread (``MPIR_CVAR_ASYNC_PROGRESS=1``, set
    by ``executor.__main__`` before MPI starts); we make no progress calls of our own.

A request is completed by exactly one thread (MPI forbids two). Waiting for a request
(:meth:`Progress.wait`) pokes in a loop; between pokes a rank that has a core of its own
(``spin``) only yields, and a rank on an oversubscribed node (p = 4 on 2 cores) sleeps,
first ``wait_interval`` (20 us), then twice as long after each poke that found nothing,
up to ``max_interval``. Every wake-up of a sleeping rank takes a core from a rank that
computes (a context switch, and caches refilled): with three ranks polling every 20 us
beside one computing on 2 cores, the computing rank did a third of the work it did
beside three ranks asleep (the profile's ``share`` is measured beside ranks waiting as a
run's wait). The backoff keeps a short wait short and a long one cheap. Every completion
is stamped with the ``perf_counter`` time of the poke that saw it.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

from mpi4py import MPI

from .background import Background

__all__ = ["Pending", "Progress", "ThreadProgress", "make_progress", "check_thread_level", "POLICIES",
           "MAX_INTERVAL_S"]

MAX_INTERVAL_S = 500e-6  # the longest sleep between pokes of a waiting rank on an oversubscribed node

POLICIES = ("idle", "hooks", "boundary", "thread", "mpich")


class Pending:
    """One outstanding request and, once seen complete, the perf_counter time it was."""

    __slots__ = ("request", "done_at")

    def __init__(self, request: MPI.Request):
        self.request = request
        self.done_at: float | None = None


class Progress:
    """Main-thread progress: requests are tested by :meth:`poke` and while waiting."""

    def __init__(self, spin: bool = True, wait_interval: float = 20e-6, pokes: bool = True,
                 max_interval: float = MAX_INTERVAL_S):
        self.spin = spin
        self.wait_interval = wait_interval
        self.max_interval = max(wait_interval, max_interval)
        self.pokes = pokes  # False under the mpich policy: MPICH's thread does the work
        self._pending: list[Pending] = []
        self._requests: list[MPI.Request] = []  # the same, as Testsome takes them
        _tight_timer_slack()  # short waits end on time (Linux adds 50 us by default)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def add(self, request: MPI.Request) -> Pending:
        item = Pending(request)
        self._pending.append(item)
        self._requests.append(request)
        return item

    def poke(self) -> None:
        """Test every outstanding request once; stamp the ones that completed."""
        if self.pokes and self._pending:
            self._test()

    def _test(self) -> None:
        pending = self._pending
        done = MPI.Request.Testsome(self._requests)
        if done:
            now = time.perf_counter()
            for i in done:
                pending[i].done_at = now
            self._pending = [item for item in pending if item.done_at is None]
            self._requests = [item.request for item in self._pending]

    def wait(self, item: Pending) -> float:
        """Block until ``item`` completed (moving every other request along meanwhile);
        return its completion time (perf_counter)."""
        interval = self.wait_interval
        while item.done_at is None:
            self._test()
            if item.done_at is None:
                self._idle(interval)
                interval = min(2 * interval, self.max_interval)
        return item.done_at

    def wait_all(self, items: list[Pending]) -> list[float]:
        """Block until every item completed; return each one's own completion time."""
        return [self.wait(item) for item in items]

    def _idle(self, interval: float) -> None:
        if self.spin:
            os.sched_yield()
        else:
            time.sleep(interval)

    def close(self) -> None:
        pass


class ThreadProgress(Progress, Background):
    """The ``thread`` policy: a daemon thread polls outstanding requests every ``interval``.

    The waiting caller takes its request out of the polled set first, then polls it itself,
    so that one request is only ever tested by one thread at a time.
    """

    def __init__(self, spin: bool = True, wait_interval: float = 20e-6, interval: float = 200e-6):
        Progress.__init__(self, spin, wait_interval, pokes=False)
        if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
            raise RuntimeError("the progress thread needs MPI_THREAD_MULTIPLE; this MPI provides less")
        Background.__init__(self, "mpi-progress")
        self.interval = interval
        self._polling = False  # the thread is inside Testsome on a snapshot of _pending
        self._start()

    def add(self, request: MPI.Request) -> Pending:
        item = Pending(request)
        with self._cond:
            self._pending.append(item)
            self._cond.notify_all()
        return item

    def wait(self, item: Pending) -> float:
        with self._cond:
            while self._polling and item.done_at is None:
                self._cond.wait()  # the thread may be testing this very request right now
            if item.done_at is not None:
                return item.done_at
            self._pending.remove(item)  # from here on only this thread completes it
        interval = self.wait_interval
        while not item.request.Test():
            self._idle(interval)
            interval = min(2 * interval, self.max_interval)
        item.done_at = time.perf_counter()
        return item.done_at

    def close(self) -> None:
        Background.close(self)

    def _loop(self) -> None:
        _tight_timer_slack()
        while True:
            with self._cond:
                while self._running and not self._pending:
                    self._cond.wait()
                if not self._running:
                    return
                batch, self._polling = list(self._pending), True
            # Outside the lock: one Test may copy a whole large message (ms), and posting
            # new requests must not wait for it.
            done = MPI.Request.Testsome([item.request for item in batch])
            now = time.perf_counter()
            with self._cond:
                for i in done or ():
                    batch[i].done_at = now
                if done:
                    self._pending = [item for item in self._pending if item.done_at is None]
                self._polling = False
                self._cond.notify_all()
            time.sleep(self.interval)


def make_progress(policy: str, spin: bool, backoff: bool = True) -> Progress:
    """The progress object of ``policy`` (one of :data:`POLICIES`). ``backoff`` False: a
    sleeping waiter polls every 20 us throughout (where the other ranks need no core, as
    when their stages sleep, a late wake-up costs and a poll does not)."""
    if policy == "thread":
        return ThreadProgress(spin)
    if policy not in POLICIES:
        raise ValueError(f"unknown progress policy {policy!r}; expected one of {', '.join(POLICIES)}")
    return Progress(spin, pokes=policy in ("idle", "hooks", "boundary"), max_interval=MAX_INTERVAL_S if backoff else 0.0)


def check_thread_level(policy: str, device_type: str) -> None:
    """Refuse a policy that would call MPI from a thread the MPI library does not allow.
    Under ``hooks`` on a GPU the backward's pokes run on autograd's device thread (on a
    CPU autograd runs a backward on the calling thread), while the main thread waits in
    ``backward`` without calling MPI: calls from any thread, one at a time, which is
    MPI_THREAD_SERIALIZED. mpi4py asks for THREAD_MULTIPLE by default."""
    if policy == "hooks" and device_type == "cuda" and MPI.Query_thread() < MPI.THREAD_SERIALIZED:
        raise RuntimeError("--progress hooks on a GPU calls MPI from autograd's device thread, which needs "
                           "MPI_THREAD_SERIALIZED at least; this MPI was started with less")


def _tight_timer_slack() -> None:
    """Let this thread's short sleeps end on time: Linux rounds a sleep up by the thread's
    timer slack (50 us by default), which made a 50 us poll interval about 145 us here."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK = 29, in ns
    except (OSError, AttributeError):
        pass
